//! Layer trees for the merge tests: a base, three hand-made layers with
//! one case of each merge rule, and seeded random layers.

use std::collections::BTreeMap;
use std::os::unix::fs::{symlink, FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::SFlag;
use ramstick_testkit::{chmod, lchown, lsetxattr, make_node, noise_seeded, set_mtimes, Ctx};

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).ctx(format!("mkdir {}", parent.display()))?;
    }
    std::fs::write(path, bytes).ctx(format!("write {}", path.display()))
}

fn mkdir(path: &Path) -> Result<(), String> {
    std::fs::create_dir_all(path).ctx(format!("mkdir {}", path.display()))
}

fn whiteout(path: &Path) -> Result<(), String> {
    make_node(path, SFlag::S_IFCHR, 0o000, (0, 0))
}

fn opaque(path: &Path) -> Result<(), String> {
    mkdir(path)?;
    lsetxattr(path, "trusted.overlay.opaque", b"y")
}

/// A `size`-byte file with `data` at `at`, holes elsewhere.
fn sparse(path: &Path, size: u64, at: u64, data: &[u8]) -> Result<(), String> {
    let f = std::fs::File::create(path).ctx(format!("create {}", path.display()))?;
    f.set_len(size).ctx("set_len")?;
    f.write_all_at(data, at).ctx("write sparse")
}

/// The base every chain sits on: something at each path the layers hide.
pub fn build_base(base: &Path) -> Result<(), String> {
    for (path, text) in [
        ("d1/a", "base a"),
        ("d1/b", "base b"),
        ("d1/sub/c", "base c"),
        ("d2/x", "base x"),
        ("d2/y", "base y"),
        ("f1", "base f1"),
        ("gone", "base gone"),
        ("keep/k1", "base k1"),
        ("deep/a/b/c/file", "deep"),
        ("wdir/p", "base p"),
        ("wdir/q", "base q"),
        ("ld/x", "base ld x"),
        ("mixed/m0", "base m0"),
        ("plain/p0", "base p0"),
    ] {
        write(&base.join(path), text.as_bytes())?;
    }
    set_mtimes(base)
}

/// Three layers (bottom first) below `src`: whiteouts (each where a lower
/// layer has the name, as overlayfs makes them), opaque directories,
/// a directory replacing a file and a file replacing a directory, a
/// three-name hardlink group with one name overwritten higher up, every
/// kind of special file, xattrs of three namespaces, a sparse file,
/// multi-block files and duplicate contents.
pub fn build_hand_layers(src: &Path) -> Result<Vec<PathBuf>, String> {
    let (l1, l2, l3) = (src.join("l1"), src.join("l2"), src.join("l3"));
    // Layer 1.
    write(&l1.join("d2"), b"a file where the base has a directory")?;
    whiteout(&l1.join("gone"))?;
    write(&l1.join("hl"), b"linked thrice")?;
    mkdir(&l1.join("hdir"))?;
    std::fs::hard_link(l1.join("hl"), l1.join("hdir/hl2")).ctx("link hl2")?;
    std::fs::hard_link(l1.join("hl"), l1.join("hdir/hl3")).ctx("link hl3")?;
    write(&l1.join("big"), &noise_seeded(300_000, false, 1))?;
    sparse(
        &l1.join("sparse"),
        64 << 20,
        10 << 20,
        &noise_seeded(5000, false, 2),
    )?;
    symlink("target/path", l1.join("sym")).ctx("symlink")?;
    lsetxattr(&l1.join("sym"), "trusted.note", b"on a symlink")?;
    make_node(&l1.join("fifo"), SFlag::S_IFIFO, 0o640, (0, 0))?;
    lsetxattr(&l1.join("fifo"), "trusted.f", b"fifo")?;
    write(&l1.join("ld/y"), b"l1 ld y")?;
    write(&l1.join("mixed/m1"), b"l1 m1")?;
    write(&l1.join("plain/p1"), b"l1 p1")?;
    lsetxattr(&l1.join("plain"), "user.dirattr", b"one")?;
    write(&l1.join("xattrs"), b"xattrs")?;
    lsetxattr(&l1.join("xattrs"), "user.a", b"user value")?;
    lsetxattr(&l1.join("xattrs"), "trusted.b", b"\x00\x01trusted")?;
    let cap = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    lsetxattr(&l1.join("xattrs"), "security.capability", &cap)?;
    let dup = noise_seeded(40_000, true, 3);
    write(&l1.join("dup1"), &dup)?;
    write(&l1.join("dup2"), &dup)?;
    write(&l1.join("keep/k2"), b"l1 k2")?;
    write(&l1.join("fresh/f1"), b"in a directory the base lacks")?;
    opaque(&l1.join("od"))?;
    write(&l1.join("od/x"), b"l1 od x")?;
    // Layer 2.
    opaque(&l2.join("d1"))?;
    write(&l2.join("d1/new"), b"l2 d1 new")?;
    write(
        &l2.join("f1/inside"),
        b"a directory where the base has a file",
    )?;
    write(&l2.join("hdir/hl3"), b"overwrites one name of the group")?;
    opaque(&l2.join("ld"))?;
    write(&l2.join("ld/z"), b"l2 ld z")?;
    whiteout(&l2.join("mixed"))?;
    write(&l2.join("plain/p2"), b"l2 p2")?;
    make_node(&l2.join("chr"), SFlag::S_IFCHR, 0o620, (1, 3))?;
    make_node(&l2.join("blk"), SFlag::S_IFBLK, 0o660, (7, 0))?;
    make_node(&l2.join("sock"), SFlag::S_IFSOCK, 0o777, (0, 0))?;
    symlink("../abs", l2.join("sym2")).ctx("symlink sym2")?;
    write(&l2.join("tail"), &noise_seeded(100, true, 4))?;
    mkdir(&l2.join("fresh"))?;
    whiteout(&l2.join("fresh/f1"))?;
    mkdir(&l2.join("od"))?;
    whiteout(&l2.join("od/x"))?;
    mkdir(&l2.join("keep"))?;
    whiteout(&l2.join("keep/k1"))?;
    // Layer 3.
    write(&l3.join("d2/again"), b"a directory again")?;
    whiteout(&l3.join("wdir"))?;
    write(&l3.join("ld/w"), b"l3 ld w")?;
    write(&l3.join("mixed/m3/f"), b"l3 m3 f")?;
    write(&l3.join("plain/p3"), b"l3 p3")?;
    whiteout(&l3.join("plain/p1"))?;
    chmod(&l3.join("plain"), 0o700)?;
    lchown(&l3.join("plain"), 1000, 1000)?;
    lsetxattr(&l3.join("plain"), "user.dirattr", b"three")?;
    write(&l3.join("d1/new2"), b"l3 d1 new2")?;
    write(&l3.join("hdir/new"), b"l3 new")?;
    write(&l3.join("big3"), &noise_seeded(200_000, true, 5))?;
    for layer in [&l1, &l2, &l3] {
        set_mtimes(layer)?;
    }
    Ok(vec![l1, l2, l3])
}

/// xorshift64: deterministic per seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A random path of 1–4 components out of six names (so that layers
/// collide often).
fn random_rel(rng: &mut Rng) -> PathBuf {
    let depth = 1 + rng.below(4);
    (0..depth)
        .map(|_| ["a", "b", "c", "d", "e", "f"][rng.below(6)])
        .collect()
}

/// Prepares `root/rel` for a new entry: parents are made directories; false
/// if a parent is not a directory or the name exists.
fn room(root: &Path, rel: &Path) -> Result<bool, String> {
    let mut at = root.to_path_buf();
    for part in rel.parent().into_iter().flat_map(|p| p.components()) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
            Err(_) => mkdir(&at)?,
        }
    }
    Ok(std::fs::symlink_metadata(root.join(rel)).is_err())
}

/// Random file contents: empty, small, multi-block or sparse.
fn random_file(rng: &mut Rng, path: &Path) -> Result<(), String> {
    let seed = rng.next();
    match rng.below(5) {
        0 => write(path, b""),
        1 => write(path, &noise_seeded(1 + rng.below(100), true, seed)),
        2 => write(path, &noise_seeded(1000 + rng.below(3000), false, seed)),
        3 => write(path, &noise_seeded(20_000 + rng.below(30_000), true, seed)),
        _ => sparse(path, 1 << 20, 300_000, &noise_seeded(5000, false, seed)),
    }
}

/// What the stack shows so far (overlayfs' rule, no kernel): relative
/// path → whether it is a directory.
type View = BTreeMap<PathBuf, bool>;

/// Removes `rel` and everything below it from `view`; `keep_self` keeps
/// `rel` (an opaque directory hides only what is below).
fn remove_below(view: &mut View, rel: &Path, keep_self: bool) {
    let doomed: Vec<PathBuf> = view
        .range(rel.to_path_buf()..)
        .take_while(|(p, _)| p.starts_with(rel))
        .map(|(p, _)| p.clone())
        .filter(|p| !(keep_self && p == rel))
        .collect();
    for p in doomed {
        view.remove(&p);
    }
}

/// Puts `layer` on top of `view`.
fn apply(view: &mut View, layer: &Path, rel: &Path) -> Result<(), String> {
    let dir = layer.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .ctx(format!("list {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .ctx("list")?;
    names.sort();
    for name in names {
        let child = rel.join(&name);
        let meta = std::fs::symlink_metadata(layer.join(&child)).ctx("lstat")?;
        let ft = meta.file_type();
        if ft.is_char_device() && meta.rdev() == 0 {
            remove_below(view, &child, false);
        } else if ft.is_dir() {
            if view.get(&child) != Some(&true) {
                remove_below(view, &child, false);
                view.insert(child.clone(), true);
            }
            if xattr_is(&layer.join(&child), "trusted.overlay.opaque", b"y") {
                remove_below(view, &child, true);
            }
            apply(view, layer, &child)?;
        } else {
            remove_below(view, &child, false);
            view.insert(child, false);
        }
    }
    Ok(())
}

/// Whether `path` has the xattr `name` with `value`.
fn xattr_is(path: &Path, name: &str, value: &[u8]) -> bool {
    let (Ok(p), Ok(n)) = (
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: both strings are NUL-terminated; `buf` is valid for writes
    // of its length.
    let n =
        unsafe { nix::libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).is_ok_and(|n| &buf[..n] == value)
}

/// One random operation on `layer`; `files` are its regular files so far,
/// `opaque` its opaque directories, `below` what the layers below show.
fn random_op(
    rng: &mut Rng,
    layer: &Path,
    files: &mut Vec<PathBuf>,
    opaque_dirs: &mut Vec<PathBuf>,
    below: &View,
) -> Result<(), String> {
    let rel = random_rel(rng);
    let path = layer.join(&rel);
    let op = rng.below(12);
    if op >= 10 {
        // Change an existing entry of this layer.
        if !(files.is_empty() || rng.below(2) == 0) {
            let f = files[rng.below(files.len())].clone();
            return if op == 10 {
                let v = format!("value {}", rng.next());
                lsetxattr(&f, &format!("user.k{}", rng.below(3)), v.as_bytes())
            } else {
                chmod(&f, [0o600, 0o755, 0o4750][rng.below(3)])?;
                lchown(&f, 1000 + rng.below(3) as u32, 100)
            };
        }
        return Ok(());
    }
    if !room(layer, &rel)? {
        return Ok(());
    }
    match op {
        0..=2 => {
            random_file(rng, &path)?;
            files.push(path);
        }
        3 => mkdir(&path)?,
        // As overlayfs makes them: only where something below shows, in a
        // directory merged with the layers below (not in an opaque one).
        4 | 5 if below.contains_key(&rel) && !opaque_dirs.iter().any(|o| rel.starts_with(o)) => {
            whiteout(&path)?
        }
        4 | 5 => {}
        6 => {
            opaque(&path)?;
            opaque_dirs.push(rel);
        }
        7 => symlink(format!("../t{}", rng.below(9)), &path).ctx("symlink")?,
        8 if !files.is_empty() => {
            let f = files[rng.below(files.len())].clone();
            std::fs::hard_link(&f, &path).ctx("hardlink")?;
            files.push(path);
        }
        _ => make_node(&path, SFlag::S_IFIFO, 0o644, (0, 0))?,
    }
    Ok(())
}

/// A random base and `count` random layers (bottom first) below `src`,
/// `ops` operations in all.
pub fn build_random_layers(
    src: &Path,
    seed: u64,
    count: usize,
    ops: usize,
) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let base = src.join("base");
    mkdir(&base)?;
    for _ in 0..80 {
        let rel = random_rel(&mut rng);
        if room(&base, &rel)? {
            if rng.below(3) == 0 {
                mkdir(&base.join(&rel))?;
            } else {
                random_file(&mut rng, &base.join(&rel))?;
            }
        }
    }
    set_mtimes(&base)?;
    let mut view = View::new();
    apply(&mut view, &base, Path::new(""))?;
    let mut layers = Vec::new();
    for i in 0..count {
        let layer = src.join(format!("r{i}"));
        mkdir(&layer)?;
        let (mut files, mut opaque_dirs) = (Vec::new(), Vec::new());
        for _ in 0..ops / count {
            random_op(&mut rng, &layer, &mut files, &mut opaque_dirs, &view)?;
        }
        apply(&mut view, &layer, Path::new(""))?;
        set_mtimes(&layer)?;
        layers.push(layer);
    }
    Ok((base, layers))
}
