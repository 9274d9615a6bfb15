//! Privileged tests of the reader and the verifier on real images:
//! mksquashfs-made images (every compressor) unpack to exactly what
//! `unsquashfs -d` and a loop mount show; `verify` names each kind of
//! difference; crafted malicious images are refused without writing outside
//! the target; truncated and bit-flipped images fail cleanly.
//!
//! Needs squashfs-tools and attr, and root but for the malicious images
//! (the harness says why each case is skipped otherwise).

use std::fs::File;
use std::os::unix::fs::{symlink, FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use ramstick_common::tree::tree_listing;
use ramstick_squash::{pack, unpack, verify, Error, Exclude, PackOptions, UnpackOptions};
use ramstick_testkit::{
    build_every_kind, build_full_tree, ensure, ensure_same, getfattr, lsetxattr, main_with, run,
    Case, CaseResult, Ctx, Mounted, Outcome, Root, Tool, GETFATTR, MKSQUASHFS, UNSQUASHFS,
};

/// What the trees of every kind hold.
const EVERY_KIND: &[Root] = &[Root::DeviceNodes, Root::ForeignOwners, Root::TrustedXattrs];
/// Images made by mksquashfs, trees compared with unsquashfs' and getfattr.
const TOOLS: &[Tool] = &[MKSQUASHFS, UNSQUASHFS, GETFATTR];

fn main() -> ExitCode {
    main_with(
        "unpack",
        &[
            Case::new("every_compressor_matches_unsquashfs", every_compressor)
                .root(EVERY_KIND)
                .tools(TOOLS),
            Case::new("our_writer_matches_unsquashfs", our_writer)
                .root(EVERY_KIND)
                .tools(TOOLS),
            Case::new("full_tree_matches_unsquashfs_and_mount", full_tree)
                .root(&[
                    Root::DeviceNodes,
                    Root::ForeignOwners,
                    Root::TrustedXattrs,
                    Root::LoopDevices,
                ])
                .tools(TOOLS),
            Case::new("verify_names_each_difference", verify_differences)
                .root(EVERY_KIND)
                .tools(TOOLS),
            Case::new("malicious_images_are_refused", malicious_images).tools(&[MKSQUASHFS]),
            Case::new("damaged_images_fail_cleanly", damaged_images)
                .root(EVERY_KIND)
                .tools(&[MKSQUASHFS]),
        ],
    )
}

/// `mksquashfs src image -comp <comp> <extra…>`.
fn mksquashfs(src: &Path, image: &Path, comp: &str, extra: &[&str]) -> Result<(), String> {
    run(Command::new("mksquashfs")
        .arg(src)
        .arg(image)
        .args(["-noappend", "-quiet", "-no-progress", "-comp", comp])
        .args(extra))
    .map(drop)
}

/// A fresh `dir/src` holding [`build_every_kind`]'s tree.
fn every_kind_source(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("src");
    std::fs::create_dir(&src).ctx("mkdir src")?;
    build_every_kind(&src)?;
    Ok(src)
}

/// Unpacks `image` with `unsquashfs -d` and with our reader (into
/// `dir/<name>.ref` and `dir/<name>.ours`); both trees must be equal.
/// Returns our tree.
fn like_unsquashfs(image: &Path, dir: &Path, name: &str) -> Result<PathBuf, String> {
    let reference = dir.join(format!("{name}.ref"));
    run(Command::new("unsquashfs")
        .args(["-quiet", "-no-progress", "-d"])
        .arg(&reference)
        .arg(image))?;
    let got = dir.join(format!("{name}.ours"));
    ours(image, &got)?;
    same_trees(name, &reference, &got)?;
    std::fs::remove_dir_all(&reference).ctx("clean")?;
    Ok(got)
}

/// Unpacks `image` into a new directory `dir` with our reader.
fn ours(image: &Path, dir: &Path) -> Result<(), String> {
    std::fs::create_dir(dir).ctx("mkdir")?;
    unpack(image, dir, &UnpackOptions::default())
        .map(drop)
        .map_err(|e| format!("unpack {}: {e}", image.display()))
}

/// Both listings (tree_listing + getfattr) of two trees must be equal.
fn same_trees(what: &str, want: &Path, got: &Path) -> Result<(), String> {
    let (a, b) = (
        tree_listing(want).ctx("list")?,
        tree_listing(got).ctx("list")?,
    );
    ensure_same(&format!("{what}: tree"), &a, &b)?;
    ensure_same(
        &format!("{what}: xattrs"),
        &getfattr(want)?,
        &getfattr(got)?,
    )
}

fn every_compressor(dir: &Path) -> CaseResult {
    let src = every_kind_source(dir)?;
    for comp in ["zstd", "gzip", "xz", "lz4"] {
        let image = dir.join(format!("{comp}.sqfs"));
        mksquashfs(&src, &image, comp, &[])?;
        let got = like_unsquashfs(&image, dir, comp)?;
        same_trees(&format!("{comp} vs source"), &src, &got)?;
        let diffs = verify(&image, &got, &Exclude::none()).ctx("verify")?;
        ensure(diffs.is_empty(), format!("{comp}: verify found {diffs:?}"))?;
        // Unpacking again into the same place must refuse, not overwrite.
        let again = unpack(&image, &got, &UnpackOptions::default());
        ensure(
            matches!(again, Err(Error::Unsafe { .. })),
            format!("{comp}: second unpack gave {again:?}"),
        )?;
    }
    let lzo = dir.join("lzo.sqfs");
    if mksquashfs(&src, &lzo, "lzo", &[]).is_ok() {
        let got = unpack(&lzo, dir, &UnpackOptions::default());
        ensure(
            matches!(got, Err(Error::Unsupported { .. })),
            format!("lzo gave {got:?}"),
        )?;
    }
    Ok(Outcome::Passed)
}

fn our_writer(dir: &Path) -> CaseResult {
    let src = every_kind_source(dir)?;
    let image = dir.join("ours.sqfs");
    pack(&src, &image, &PackOptions::default()).ctx("pack")?;
    let got = like_unsquashfs(&image, dir, "our-writer")?;
    same_trees("our writer vs source", &src, &got)?;
    let diffs = verify(&image, &src, &Exclude::none()).ctx("verify")?;
    ensure(diffs.is_empty(), format!("verify found {diffs:?}"))?;
    Ok(Outcome::Passed)
}

fn full_tree(dir: &Path) -> CaseResult {
    let src = dir.join("src");
    std::fs::create_dir(&src).ctx("mkdir src")?;
    build_full_tree(&src, false)?;
    // Small blocks, uncompressed metadata and no fragment dedup variants too.
    let variants: [(&str, &[&str]); 3] = [
        ("default", &[]),
        ("4k", &["-b", "4096", "-noI", "-noD", "-noF", "-noX"]),
        ("always-frag", &["-always-use-fragments", "-no-duplicates"]),
    ];
    for (name, extra) in variants {
        let image = dir.join(format!("{name}.sqfs"));
        mksquashfs(&src, &image, "zstd", extra)?;
        let got = like_unsquashfs(&image, dir, name)?;
        let diffs = verify(&image, &src, &Exclude::none()).ctx("verify")?;
        ensure(diffs.is_empty(), format!("{name}: verify found {diffs:?}"))?;
        if name == "default" {
            let mnt = dir.join("mnt");
            std::fs::create_dir(&mnt).ctx("mkdir mnt")?;
            let mounted = Mounted::image(&image, "squashfs", &mnt, true)?;
            same_trees("loop mount", &mnt, &got)?;
            drop(mounted);
        }
        std::fs::remove_dir_all(&got).ctx("clean")?;
    }
    Ok(Outcome::Passed)
}

fn verify_differences(dir: &Path) -> CaseResult {
    let src = every_kind_source(dir)?;
    let image = dir.join("img.sqfs");
    mksquashfs(&src, &image, "zstd", &[])?;
    let got = dir.join("got");
    ours(&image, &got)?;
    let p = |rel: &str| got.join(rel);
    // Same size, other bytes: only the content differs.
    let big = File::options().write(true).open(p("big")).ctx("open big")?;
    big.write_all_at(b"X", 1 << 20).ctx("write big")?;
    drop(big);
    std::fs::set_permissions(p("suid"), std::fs::Permissions::from_mode(0o755)).ctx("chmod")?;
    std::fs::write(p("sub/extra"), b"new\n").ctx("write extra")?;
    std::fs::remove_file(p("empty")).ctx("rm empty")?;
    lsetxattr(&p("capfile"), "user.origin", b"changed")?;
    let hl = File::options().write(true).open(p("hl1")).ctx("open hl1")?;
    hl.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(12345))
        .ctx("set mtime")?;
    drop(hl);
    std::fs::remove_file(p("dangling")).ctx("rm dangling")?;
    symlink("elsewhere", p("dangling")).ctx("symlink")?;
    let diffs = verify(&image, &got, &Exclude::none()).ctx("verify")?;
    let text: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
    let text = text.join("\n");
    for want in [
        "/big: content differs",
        "/suid: mode 4755 in the image, 0755 in the directory",
        "/sub/extra: only in the directory",
        "/empty: only in the image",
        "/capfile: xattr user.origin differs",
        "/hl1: mtime",
        "/dangling: symlink target does/not/exist in the image, elsewhere in the directory",
    ] {
        ensure(text.contains(want), format!("{want:?} missing in:\n{text}"))?;
    }
    // The directory whose entries changed has a new mtime, the symlink too.
    ensure(
        diffs.len() <= 12,
        format!("unexpected extra differences:\n{text}"),
    )?;
    // Excluding the changed paths leaves only the directories' mtimes.
    let ex = Exclude::new([
        "/big",
        "/suid",
        "/sub/extra",
        "/empty",
        "/capfile",
        "/hl1",
        "/sub/hl2",
        "/dangling",
    ])
    .ctx("exclude")?;
    let rest = verify(&image, &got, &ex).ctx("verify")?;
    ensure(
        rest.iter().all(|d| d.what.starts_with("mtime")),
        format!("with exclusions: {rest:?}"),
    )?;
    Ok(Outcome::Passed)
}

/// Byte position of the only occurrence of `needle` in `hay`.
fn find_once(hay: &[u8], needle: &[u8]) -> Result<usize, String> {
    let hits: Vec<usize> = hay
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    match hits.as_slice() {
        [one] => Ok(*one),
        _ => Err(format!(
            "{:?} found {} times in the image",
            String::from_utf8_lossy(needle),
            hits.len()
        )),
    }
}

/// Every path below `root` (sorted).
fn all_paths(root: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).ctx(format!("list {}", d.display()))? {
            let e = e.ctx("list")?;
            if e.file_type().ctx("type")?.is_dir() {
                todo.push(e.path());
            }
            out.push(e.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Unpacks `image` into `<sandbox>/target`; the result must be an
/// `Unsafe`/`Corrupt` error and nothing may appear outside the target.
fn refused(dir: &Path, name: &str, image: &Path) -> Result<(), String> {
    let sandbox = dir.join(format!("sandbox-{name}"));
    let target = sandbox.join("target");
    std::fs::create_dir_all(&target).ctx("mkdir sandbox")?;
    let result = unpack(image, &target, &UnpackOptions::default());
    ensure(
        matches!(result, Err(Error::Unsafe { .. } | Error::Corrupt { .. })),
        format!("{name}: unpack gave {result:?}"),
    )?;
    let outside: Vec<PathBuf> = all_paths(&sandbox)?
        .into_iter()
        .filter(|p| !p.starts_with(&target))
        .collect();
    ensure(
        outside.is_empty(),
        format!("{name}: written outside: {outside:?}"),
    )
}

fn malicious_images(dir: &Path) -> CaseResult {
    // Uncompressed metadata so that names and references can be patched.
    let plain = ["-noI", "-noD", "-noF", "-noX", "-no-xattrs"];
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("dd/inner")).ctx("mkdir")?;
    std::fs::write(src.join("dd/inner/payload"), b"payload\n").ctx("write")?;
    std::fs::write(src.join("f1"), b"one\n").ctx("write")?;
    std::fs::write(src.join("f2"), b"two\n").ctx("write")?;
    std::fs::write(src.join("zz"), b"last\n").ctx("write")?;
    symlink("../../escape", src.join("ee")).ctx("symlink")?;
    let image = dir.join("base.sqfs");
    mksquashfs(&src, &image, "gzip", &plain)?;
    let base = std::fs::read(&image).ctx("read image")?;
    let patched = |name: &str, edit: &dyn Fn(&mut Vec<u8>) -> Result<(), String>| {
        let mut bytes = base.clone();
        edit(&mut bytes)?;
        let path = dir.join(format!("{name}.sqfs"));
        std::fs::write(&path, &bytes).ctx("write patched")?;
        Ok::<PathBuf, String>(path)
    };
    let rename = |from: &'static [u8], to: &'static [u8]| {
        move |b: &mut Vec<u8>| {
            let at = find_once(b, from)?;
            b[at..at + to.len()].copy_from_slice(to);
            Ok(())
        }
    };
    // The unpatched image unpacks (so the patches are what is refused).
    let ok = dir.join("ok");
    ours(&image, &ok)?;
    // "zz" → "..", "f2" → "a/", "f2" → "f1" (duplicate), "dd" → "ee" (a
    // directory after a symlink of the same name).
    let cases: [(&str, &'static [u8], &'static [u8]); 4] = [
        ("dotdot", b"zz", b".."),
        ("slash", b"f2", b"a/"),
        ("duplicate", b"f2", b"f1"),
        ("through_symlink", b"dd", b"ee"),
    ];
    for (name, from, to) in cases {
        let img = patched(name, &rename(from, to))?;
        refused(dir, name, &img)?;
    }
    // A cycle: "inner" points back at the root directory's inode.
    let cycle = patched("cycle", &|b: &mut Vec<u8>| {
        let sb_root = u64::from_le_bytes(b[32..40].try_into().ctx("sb")?);
        let inode_table = u64::from_le_bytes(b[64..72].try_into().ctx("sb")?) as usize;
        let root_off = (sb_root & 0xffff) as usize;
        ensure(sb_root >> 16 == 0, "root inode not in the first block")?;
        // Skip the 2-byte metadata header of the uncompressed block.
        let root_at = inode_table + 2 + root_off;
        let root_number = u32::from_le_bytes(b[root_at + 12..root_at + 16].try_into().ctx("n")?);
        // "inner" is the only entry of "dd": header (12 bytes), then the entry.
        let name_at = find_once(b, b"inner")?;
        let entry = name_at - 8;
        let header = entry - 12;
        let base = u32::from_le_bytes(b[header + 8..header + 12].try_into().ctx("base")?);
        b[header + 4..header + 8].copy_from_slice(&0u32.to_le_bytes());
        b[entry..entry + 2].copy_from_slice(&(root_off as u16).to_le_bytes());
        let delta = (i64::from(root_number) - i64::from(base)) as i16;
        b[entry + 2..entry + 4].copy_from_slice(&delta.to_le_bytes());
        Ok(())
    })?;
    refused(dir, "cycle", &cycle)?;
    // An existing symlink in the target is never followed.
    let sandbox = dir.join("sandbox-existing");
    let target = sandbox.join("target");
    std::fs::create_dir_all(&target).ctx("mkdir")?;
    symlink("..", target.join("dd")).ctx("symlink")?;
    let result = unpack(&image, &target, &UnpackOptions::default());
    ensure(
        matches!(result, Err(Error::Unsafe { .. })),
        format!("existing symlink: {result:?}"),
    )?;
    ensure(
        !sandbox.join("inner").exists(),
        "wrote through an existing symlink",
    )?;
    Ok(Outcome::Passed)
}

fn damaged_images(dir: &Path) -> CaseResult {
    let src = every_kind_source(dir)?;
    // Drop the 1 GiB sparse file and the 3 MiB file: keep each try quick.
    std::fs::remove_file(src.join("sparse")).ctx("rm")?;
    std::fs::write(src.join("big"), vec![b'x'; 300_000]).ctx("write")?;
    let image = dir.join("img.sqfs");
    mksquashfs(&src, &image, "zstd", &[])?;
    let good = std::fs::read(&image).ctx("read")?;
    let used = u64::from_le_bytes(good[40..48].try_into().ctx("sb")?) as usize;
    let bad = dir.join("bad.sqfs");
    let mut tries = 0;
    let mut errors = 0;
    let mut attempt = |bytes: &[u8]| -> Result<bool, String> {
        std::fs::write(&bad, bytes).ctx("write bad")?;
        tries += 1;
        let sandbox = dir.join("sandbox");
        let target = sandbox.join("target");
        std::fs::create_dir_all(&target).ctx("mkdir")?;
        let result = unpack(&bad, &target, &UnpackOptions::default());
        let outside = all_paths(&sandbox)?
            .into_iter()
            .any(|p| !p.starts_with(&target));
        ensure(!outside, "wrote outside the target")?;
        std::fs::remove_dir_all(&sandbox).ctx("clean")?;
        Ok(result.is_err())
    };
    // Every truncation inside the used bytes fails.
    for cut in (0..used).step_by(used / 97 + 1).chain([used - 1]) {
        ensure(
            attempt(&good[..cut])?,
            format!("truncated at {cut} unpacked"),
        )?;
    }
    // Bit flips: any result but a panic, a hang or a write outside.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let mut bytes = good.clone();
        let at = (seed % used as u64) as usize;
        bytes[at] ^= 1 << ((seed >> 32) % 8);
        errors += usize::from(attempt(&bytes)?);
    }
    ensure(errors > 0, "no bit flip was noticed")?;
    println!("damaged_images: {tries} tries, {errors} flipped images refused");
    Ok(Outcome::Passed)
}
