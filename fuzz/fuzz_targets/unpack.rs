//! Fuzz target: unpacks arbitrary bytes as a squashfs image into
//! `<tmp>/sandbox/target` and checks that nothing was created anywhere else
//! (and that the reader neither panics nor hangs — libFuzzer's -timeout).

#![no_main]

use libfuzzer_sys::fuzz_target;
use ramstick_squash::{unpack, UnpackOptions};
use std::path::{Path, PathBuf};

/// Names directly inside `dir`, sorted.
fn names(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list scratch dir")
        .map(|e| e.expect("list scratch dir").path())
        .collect();
    out.sort();
    out
}

fuzz_target!(|data: &[u8]| {
    let tmp = std::env::temp_dir().join(format!("ramstick-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let sandbox = tmp.join("sandbox");
    let target = sandbox.join("target");
    std::fs::create_dir_all(&target).expect("create sandbox");
    let image = tmp.join("image.sqfs");
    std::fs::write(&image, data).expect("write image");
    let options = UnpackOptions {
        threads: 2,
        progress: None,
    };
    // Any error is fine; a panic or a write outside the target is not.
    let _ = unpack(&image, &target, &options);
    assert_eq!(names(&tmp), vec![image.clone(), sandbox.clone()]);
    assert_eq!(names(&sandbox), vec![target.clone()]);
    std::fs::remove_dir_all(&tmp).expect("clean up");
});
