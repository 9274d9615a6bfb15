//! Owners and modes on the stick's data partition, whoever builds it.
//!
//! `mkfs.ext4 -d` copies the staging tree's owners, so an image built by a
//! normal user would carry that user's uid on `rootfs.squashfs`, the modules
//! image and every other file: uid 1000 inside the booted system could then
//! rewrite the base image and be root at the next boot. After `mkfs.ext4`,
//! `debugfs -w` (which edits an image file, no root needed) sets every
//! inode the staging tree put there to root:root, directories 0755 and
//! files 0644, except `user/` and what is under it, which belong to the
//! rootfs's account ([`USER_ID`]).

use crate::deps;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// uid and gid of `user/` on the stick: the `user` account every rootfs
/// kind creates (its home is chowned to the same ids).
pub const USER_ID: u32 = 1000;

/// The directory on the stick that belongs to [`USER_ID`].
const USER_DIR: &str = "user";

/// One inode to fix: its path in the filesystem, owner and full mode.
#[derive(Debug, PartialEq, Eq)]
struct Wanted {
    path: String,
    id: u32,
    /// `st_mode` incl. the file type bits, as debugfs's `mode` field takes it.
    mode: u32,
}

/// What every entry of the staged tree `content` must become, root first.
fn wanted(content: &Path) -> Result<Vec<Wanted>> {
    let mut out = vec![Wanted {
        path: "/".into(),
        id: 0,
        mode: 0o040755,
    }];
    walk(content, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Wanted>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list {}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|n| !n.contains(['"', '\n', '\\'])) else {
            bail!(
                "{} has a name debugfs cannot be given",
                entry.path().display()
            );
        };
        let path = format!("{prefix}/{name}");
        let meta = entry
            .path()
            .symlink_metadata()
            .with_context(|| format!("cannot stat {}", entry.path().display()))?;
        let user = path == format!("/{USER_DIR}") || path.starts_with(&format!("/{USER_DIR}/"));
        let id = if user { USER_ID } else { 0 };
        let kind = meta.file_type();
        let mode = if kind.is_dir() {
            0o040755
        } else if kind.is_file() {
            0o100644
        } else if kind.is_symlink() {
            0o120777
        } else {
            bail!(
                "{} is not a file, directory or symlink",
                entry.path().display()
            );
        };
        out.push(Wanted { path, id, mode });
        if kind.is_dir() {
            walk(&entry.path(), &format!("{prefix}/{name}"), out)?;
        }
    }
    Ok(())
}

/// The debugfs commands that give every entry its owner and mode.
fn script(wanted: &[Wanted]) -> String {
    let mut s = String::new();
    for w in wanted {
        for (field, value) in [
            ("uid", w.id.to_string()),
            ("gid", w.id.to_string()),
            ("mode", format!("0{:o}", w.mode)),
        ] {
            s.push_str(&format!("set_inode_field \"{}\" {field} {value}\n", w.path));
        }
    }
    s
}

/// The debugfs command file beside the image: only scratch, so removed
/// on every path out of [`normalize`] (a write that failed half-way too).
struct CommandFile(PathBuf);

impl Drop for CommandFile {
    fn drop(&mut self) {
        // Best effort: nothing to report if it is gone already.
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sets owners and modes in the ext4 `image` made from `content`.
pub fn normalize(image: &Path, content: &Path) -> Result<()> {
    deps::ensure(&[("debugfs", "e2fsprogs")])?;
    let commands = script(&wanted(content)?);
    let file = CommandFile(crate::initramfs::partial_path(
        &image.with_extension("debugfs"),
    ));
    std::fs::write(&file.0, &commands)
        .with_context(|| format!("cannot write {}", file.0.display()))?;
    let out = deps::cmd("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&file.0)
        .arg(image)
        .output();
    drop(file);
    let out = out.context("cannot run debugfs")?;
    // debugfs exits 0 even when a command fails; its errors go to stderr
    // after the version banner.
    let errors: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if !out.status.success() || !errors.is_empty() {
        bail!(
            "debugfs could not set the owners in {} ({}): {}",
            image.display(),
            out.status,
            errors.join("; ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ramstick_testkit::{have, skip, TempDir, DEBUGFS, DUMPE2FS, MKFS_EXT4};

    #[test]
    fn script_sets_owner_and_mode_of_every_entry() {
        let w = vec![
            Wanted {
                path: "/".into(),
                id: 0,
                mode: 0o040755,
            },
            Wanted {
                path: "/user".into(),
                id: 1000,
                mode: 0o040755,
            },
        ];
        assert_eq!(
            script(&w),
            "set_inode_field \"/\" uid 0\nset_inode_field \"/\" gid 0\n\
             set_inode_field \"/\" mode 040755\nset_inode_field \"/user\" uid 1000\n\
             set_inode_field \"/user\" gid 1000\nset_inode_field \"/user\" mode 040755\n"
        );
    }

    /// `debugfs -R 'ls -l DIR'` as (name → (mode, uid, gid)).
    fn listing(image: &Path, dir: &str) -> Vec<(String, u32, u32, u32)> {
        let out = deps::output(
            deps::cmd("debugfs")
                .arg("-R")
                .arg(format!("ls -l {dir}"))
                .arg(image),
        )
        .unwrap();
        out.lines()
            .filter_map(|l| {
                // inode mode (links) uid gid size date time name
                let f: Vec<&str> = l.split_whitespace().collect();
                if f.len() < 8 {
                    return None;
                }
                let mode = u32::from_str_radix(f[1], 8).ok()?;
                Some((
                    f[f.len() - 1].to_string(),
                    mode,
                    f[3].parse().ok()?,
                    f[4].parse().ok()?,
                ))
            })
            .filter(|(name, ..)| name != "." && name != "..")
            .collect()
    }

    /// The staging tree is owned by a non-root uid with odd modes (as root
    /// the test chowns it; as a normal user it is that user's): the image
    /// must still hold root:root 0644/0755, user/ 1000:1000, and the
    /// superblock must say errors=remount-ro.
    #[test]
    fn data_partition_is_root_owned_whoever_builds_it() {
        if ![MKFS_EXT4, DEBUGFS, DUMPE2FS].iter().all(|t| have(t.0)) {
            skip("no mkfs.ext4/debugfs/dumpe2fs");
            return;
        }
        let dir = TempDir::new("owners");
        for (f, mode) in [
            ("rootfs.squashfs", 0o600),
            ("modules-6.1.0-test.squashfs", 0o664),
            ("extra/sub/upperfs.squashfs", 0o755),
        ] {
            dir.file(&format!("persist/{f}"), f, mode);
        }
        let st = dir.join("persist");
        ramstick_testkit::chmod(&dir.mkdir("persist/user"), 0o700).unwrap();
        if deps::is_root() {
            deps::run(deps::cmd("chown").args(["-R", "4242:4243"]).arg(&st)).unwrap();
        }
        let builder = nix::unistd::geteuid().as_raw();
        let staged = if deps::is_root() { 4242 } else { builder };
        assert_ne!(staged, 0);
        let image = dir.join("persist.img");
        crate::image::make_persist_ext4(&image, 64 << 20, &st).unwrap();
        let root = listing(&image, "/");
        let expected = [
            ("extra".to_string(), 0o40755, 0, 0),
            ("lost+found".to_string(), 0o40700, 0, 0),
            ("modules-6.1.0-test.squashfs".to_string(), 0o100644, 0, 0),
            ("rootfs.squashfs".to_string(), 0o100644, 0, 0),
            ("user".to_string(), 0o40755, 1000, 1000),
        ];
        let mut got = root.clone();
        got.sort();
        assert_eq!(got, expected);
        assert_eq!(
            listing(&image, "/extra/sub"),
            [("upperfs.squashfs".to_string(), 0o100644, 0, 0)]
        );
        let root_inode =
            deps::output(deps::cmd("debugfs").args(["-R", "stat /"]).arg(&image)).unwrap();
        assert!(
            root_inode.contains("User:     0   Group:     0"),
            "{root_inode}"
        );
        let sb = deps::output(deps::cmd("dumpe2fs").arg("-h").arg(&image)).unwrap();
        assert!(
            sb.lines()
                .any(|l| l.starts_with("Errors behavior:") && l.ends_with("Remount read-only")),
            "{sb}"
        );
    }
}
