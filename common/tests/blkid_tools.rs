//! `blkid` module against real tools: images made by mkfs.ext4, mkfs.fat,
//! cryptsetup, mksquashfs and sfdisk, compared with what `blkid -p` and
//! `sfdisk --json` say about them.
//!
//! A test whose tools are missing says why and passes without checking (run
//! with `--nocapture` to see the reasons); with `RAMSTICK_NO_SKIP=1` it fails. Images are sparse files in a
//! temporary directory.

use ramstick_common::blkid::{gpt_partitions, probe, FsInfo, FsKind};
use ramstick_testkit::{
    skip, tool, TempDir, Tool, BLKID, CRYPTSETUP, MKFS_EXT4, MKFS_FAT, MKSQUASHFS, SFDISK,
};
use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The paths of all `tools`, or `None` after saying which one is missing
/// (a skip: see `ramstick_testkit::skip`).
fn tools<const N: usize>(tools: [Tool; N]) -> Option<[PathBuf; N]> {
    let mut found = Vec::new();
    for (name, package) in tools {
        match tool(name) {
            Some(p) => found.push(p),
            None => {
                skip(&format!(
                    "`{name}` is not installed: apt-get install {package}"
                ));
                return None;
            }
        }
    }
    found.try_into().ok()
}

/// A sparse file `name` of `size` bytes in `dir`.
fn sparse_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    File::create(&path)
        .and_then(|f| f.set_len(size))
        .expect("create image");
    path
}

/// Runs a command and returns its stdout, panicking with stderr on failure.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `blkid -p -o export` of an image as a map.
fn blkid_export(blkid: &Path, image: &Path) -> HashMap<String, String> {
    run(Command::new(blkid).args(["-p", "-o", "export"]).arg(image))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn probe_file(image: &Path) -> Option<FsInfo> {
    probe(&mut File::open(image).expect("open image")).expect("probe image")
}

/// Checks that our probe agrees with blkid on UUID and LABEL.
fn assert_agrees_with_blkid(info: &FsInfo, blkid: &HashMap<String, String>) {
    assert_eq!(
        info.uuid.as_ref(),
        blkid.get("UUID"),
        "UUID; blkid: {blkid:?}"
    );
    assert_eq!(
        info.label.as_ref(),
        blkid.get("LABEL"),
        "LABEL; blkid: {blkid:?}"
    );
}

#[test]
fn ext4_made_by_mkfs() {
    let Some([mkfs, blkid]) = tools([MKFS_EXT4, BLKID]) else {
        return;
    };
    let dir = TempDir::new("ext4");
    let image = sparse_file(&dir, "ext4.img", 4 << 20);
    let uuid = "0a1b2c3d-4e5f-6789-abcd-ef0123456789";
    run(Command::new(mkfs)
        .args(["-q", "-F", "-L", "RAMSTICK", "-U", uuid])
        .arg(&image));
    let info = probe_file(&image).expect("ext4 recognised");
    assert_eq!(info.kind, FsKind::Ext4);
    assert_eq!(info.uuid.as_deref(), Some(uuid));
    assert_eq!(info.label.as_deref(), Some("RAMSTICK"));
    let blkid = blkid_export(&blkid, &image);
    assert_eq!(blkid.get("TYPE").map(String::as_str), Some("ext4"));
    assert_agrees_with_blkid(&info, &blkid);
}

#[test]
fn fat16_and_fat32_made_by_mkfs() {
    let Some([mkfs, blkid]) = tools([MKFS_FAT, BLKID]) else {
        return;
    };
    let dir = TempDir::new("fat");
    for (bits, size) in [("16", 16u64 << 20), ("32", 64 << 20)] {
        let image = sparse_file(&dir, &format!("fat{bits}.img"), size);
        run(Command::new(&mkfs)
            .args(["-F", bits, "-s", "1", "-n", "ESP", "-i", "1234ABCD"])
            .arg(&image));
        let info = probe_file(&image).expect("fat recognised");
        assert_eq!(info.kind, FsKind::Vfat, "FAT{bits}");
        assert_eq!(info.uuid.as_deref(), Some("1234-ABCD"), "FAT{bits}");
        assert_eq!(info.label.as_deref(), Some("ESP"), "FAT{bits}");
        let blkid = blkid_export(&blkid, &image);
        assert_eq!(blkid.get("TYPE").map(String::as_str), Some("vfat"));
        assert_agrees_with_blkid(&info, &blkid);
    }
}

#[test]
fn luks2_made_by_cryptsetup() {
    let Some([cryptsetup, blkid]) = tools([CRYPTSETUP, BLKID]) else {
        return;
    };
    let dir = TempDir::new("luks");
    let image = sparse_file(&dir, "luks.img", 32 << 20);
    let key = dir.join("key");
    fs::write(&key, b"not a secret").expect("write key");
    let uuid = "12345678-9abc-def0-1234-56789abcdef0";
    run(Command::new(cryptsetup)
        .args(["luksFormat", "--batch-mode", "--type", "luks2"])
        .args(["--label", "secret", "--uuid", uuid])
        .args(["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"])
        .arg("--key-file")
        .arg(&key)
        .arg(&image));
    let info = probe_file(&image).expect("luks recognised");
    assert_eq!(info.kind, FsKind::Luks);
    assert_eq!(info.uuid.as_deref(), Some(uuid));
    assert_eq!(info.label.as_deref(), Some("secret"));
    let blkid = blkid_export(&blkid, &image);
    assert_eq!(blkid.get("TYPE").map(String::as_str), Some("crypto_LUKS"));
    assert_agrees_with_blkid(&info, &blkid);
}

#[test]
fn squashfs_made_by_mksquashfs() {
    let Some([mksquashfs]) = tools([MKSQUASHFS]) else {
        return;
    };
    let dir = TempDir::new("squashfs");
    let content = dir.join("content");
    fs::create_dir(&content).expect("mkdir");
    fs::write(content.join("hello"), b"hello").expect("write");
    let image = dir.join("fs.squashfs");
    run(Command::new(mksquashfs).arg(&content).arg(&image).args([
        "-quiet",
        "-noappend",
        "-no-progress",
    ]));
    let info = probe_file(&image).expect("squashfs recognised");
    assert_eq!(info.kind, FsKind::Squashfs);
}

#[test]
fn gpt_made_by_sfdisk() {
    let Some([sfdisk]) = tools([SFDISK]) else {
        return;
    };
    let dir = TempDir::new("gpt");
    let image = sparse_file(&dir, "disk.img", 16 << 20);
    let script = "label: gpt\n\
        start=2048, size=8192, type=uefi, name=\"EFI system\", uuid=6B7B9F2E-1C3D-4E5F-8A9B-0C1D2E3F4A5B\n\
        start=10240, size=4096, type=linux, name=\"\", uuid=00112233-4455-6677-8899-AABBCCDDEEFF\n\
        start=14336, type=linux, name=\"RAMSTICK\"\n";
    let mut child = Command::new(&sfdisk)
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&image)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run sfdisk");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), script.as_bytes())
        .expect("write sfdisk script");
    drop(child.stdin.take());
    assert!(child.wait().expect("wait sfdisk").success());

    let ours = gpt_partitions(&mut File::open(&image).expect("open"), 512).expect("gpt read");
    let json: serde_json::Value =
        serde_json::from_str(&run(Command::new(&sfdisk).arg("--json").arg(&image)))
            .expect("sfdisk --json output");
    let theirs = json["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions array");
    assert_eq!(ours.len(), 3);
    assert_eq!(ours.len(), theirs.len());
    for (part, theirs) in ours.iter().zip(theirs) {
        let node = theirs["node"].as_str().expect("node");
        // The node is the image path followed by the partition number.
        let number = node.rsplit(|c: char| !c.is_ascii_digit()).next();
        assert_eq!(number, Some(part.number.to_string().as_str()), "{node}");
        let uuid = theirs["uuid"].as_str().expect("uuid").to_ascii_lowercase();
        assert_eq!(part.partuuid, uuid);
        assert_eq!(part.partlabel, theirs["name"].as_str().unwrap_or(""));
    }
    assert_eq!(ours[0].partuuid, "6b7b9f2e-1c3d-4e5f-8a9b-0c1d2e3f4a5b");
    assert_eq!(ours[0].partlabel, "EFI system");
    assert_eq!(ours[1].partlabel, "");
    assert_eq!(ours[2].partlabel, "RAMSTICK");
}
