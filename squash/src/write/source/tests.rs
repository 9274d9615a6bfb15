//! Tests of reading sources: duplicates, holes, changed files.

use super::*;
use crate::Exclude;
use ramstick_testkit::TempDir;
use std::os::unix::fs::FileExt;

#[test]
fn duplicates_are_confirmed_and_zeros_hash_alike_stored_or_not() {
    let dir = TempDir::new("dup");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("a"), &content).unwrap();
    std::fs::write(dir.join("b"), &content).unwrap();
    let mut other = content.clone();
    other[199_999] ^= 1;
    std::fs::write(dir.join("c"), &other).unwrap();
    // Same bytes: zeros written out, and a hole.
    let mut zeros = vec![0u8; 300_000];
    zeros[299_999] = 7;
    std::fs::write(dir.join("d"), &zeros).unwrap();
    let sparse = File::create(dir.join("e")).unwrap();
    sparse.set_len(300_000).unwrap();
    sparse.write_all_at(&[7], 299_999).unwrap();
    let tree = super::super::scan::scan(&dir, &Exclude::none()).unwrap();
    let inputs = Inputs::new(&tree, &[]);
    let source = |name: &[u8]| match &tree.nodes[0].kind {
        Kind::Dir { entries, .. } => {
            let (_, child) = entries.iter().find(|(n, _)| n == name).unwrap();
            match &tree.nodes[*child].kind {
                Kind::File { source, .. } => *source,
                _ => unreachable!(),
            }
        }
        _ => unreachable!(),
    };
    let (a, b, c, d, e) = (
        source(b"a"),
        source(b"b"),
        source(b"c"),
        source(b"d"),
        source(b"e"),
    );
    let hash = |s: &Source, size| hash(&inputs, s, size, 65536).unwrap();
    assert_eq!(hash(&a, 200_000), hash(&b, 200_000));
    assert_ne!(hash(&a, 200_000), hash(&c, 200_000));
    assert_eq!(hash(&d, 300_000), hash(&e, 300_000));
    assert!(same(&inputs, &a, &b, 200_000, 65536).unwrap());
    assert!(!same(&inputs, &a, &c, 200_000, 65536).unwrap());
    assert!(same(&inputs, &d, &e, 300_000, 65536).unwrap());
    // The sparse file's first block is a hole: not read.
    let mut content = inputs.open(&e, 300_000, 65536).unwrap();
    assert!(matches!(
        content.next(&inputs).unwrap(),
        Some(Chunk::Hole(65536))
    ));
}

#[test]
fn a_changed_file_fails_a_checked_read_and_an_as_is_read_stops_where_it_ends() {
    let dir = TempDir::new("asis");
    let path = dir.join("f");
    std::fs::write(&path, vec![7u8; 300_000]).unwrap();
    let tree = super::super::scan::scan(&dir, &Exclude::none()).unwrap();
    let inputs = Inputs::new(&tree, &[]);
    let Kind::File { source, .. } = &tree.nodes[tree.order[0]].kind else {
        unreachable!()
    };
    let file = File::options().write(true).open(&path).unwrap();
    let is_changed = |r: Result<_>| matches!(r, Err(Error::Changed { .. }));
    // Changed since the scan: the first open says so.
    file.write_all_at(&[8; 10], 300_000).unwrap();
    assert!(is_changed(inputs.open(source, 300_000, 65536).map(drop)));
    // Reopened as it is now (300 010 bytes), then cut short meanwhile.
    let mut checked = inputs.reopen(source, 300_000, 65536, false).unwrap();
    let mut as_is = inputs.reopen(source, 300_000, 65536, true).unwrap();
    assert_eq!(checked.next(&inputs).unwrap().map(|c| c.len()), Some(65536));
    assert_eq!(as_is.next(&inputs).unwrap().map(|c| c.len()), Some(65536));
    file.set_len(100_000).unwrap();
    assert!(is_changed(checked.next(&inputs).map(drop)));
    let Some(Chunk::Data(tail)) = as_is.next(&inputs).unwrap() else {
        panic!("no tail");
    };
    assert_eq!(tail, &[7u8; 100_000 - 65536][..]);
    assert!(as_is.next(&inputs).unwrap().is_none());
    let seen = as_is.finish().unwrap().unwrap();
    assert_eq!(seen.size, 100_000);
    assert_eq!(seen, Stamp::of(&file, &path).unwrap());
}
