//! The writer's data pass: file contents stream through a pipeline of
//!
//! * one reader thread, which reads files in inode order from their
//!   [`Source`] (a file of the tree or of an input image), cuts them into
//!   blocks, stores holes and all-zero blocks as holes (size 0, no data; a
//!   run of them travels as one job), packs file tails shorter than a block
//!   into shared fragment blocks and skips files whose content was packed
//!   already (duplicates);
//! * N compression threads (one per core by default);
//! * the calling thread, which writes blocks in order (a reorder buffer
//!   puts them back into sequence) and reports progress.
//!
//! Memory stays bounded: a block enters the pipeline only with one of a
//! fixed number of tokens, which the writer hands back once the block is on
//! disk, so at most `4 × threads + 4` blocks are in flight.
//!
//! Duplicates: only files whose size equals another file's can be
//! duplicates; those are hashed first ([`source::hash`]) and a hash match is
//! confirmed by comparing both files ([`source::same`]), so identical
//! content is stored once and different content never shared.
//!
//! A file that changes while it is read ([`Changing`]): the reader sends a
//! rewind after its blocks, and the writer truncates the image back to
//! where the file began, so only the read that is kept leaves blocks. Its
//! tail joins a fragment only once its read is over, so a rewind never
//! touches a fragment block. A file stored other than as scanned never
//! serves as another's duplicate.

use super::codec::Codec;
use super::source::{self, Chunk, Content, Inputs, Source, Stamp};
use super::tree::{Kind, Tree};
use crate::format::NONE_U32;
use crate::read::image::Image;
use crate::{Changing, Compressor, Error, Progress, ProgressFn, Result, SETTLE_READS};
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where a file's data went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileData {
    /// Image offset of the first block.
    pub start: u64,
    /// Size word of each full block (0 = hole).
    pub sizes: Vec<u32>,
    /// Fragment block index and offset of the tail, or `NONE_U32`.
    pub fragment: u32,
    pub offset: u32,
    /// Bytes stored as holes.
    pub sparse: u64,
}

/// The output of the data pass.
pub(crate) struct Data {
    /// By node index (regular files only).
    pub files: HashMap<usize, FileData>,
    /// (image offset, size word) of each fragment block.
    pub fragments: Vec<(u64, u32)>,
    pub bytes_in: u64,
    /// Files stored other than as scanned (they changed), by node: the
    /// size and mtime of the read stored.
    pub settled: HashMap<usize, Stamp>,
}

/// The image file being written, with its current offset.
pub(crate) struct Out {
    pub file: BufWriter<File>,
    pub pos: u64,
    pub path: PathBuf,
}

impl Out {
    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the image back to `pos` (what follows is given up).
    fn rewind(&mut self, pos: u64) -> Result<()> {
        self.file
            .flush()
            .and_then(|()| self.file.get_ref().set_len(pos))
            .and_then(|()| self.file.seek(SeekFrom::Start(pos)))
            .map_err(|e| Error::io("write", &self.path, e))?;
        self.pos = pos;
        Ok(())
    }
}

/// How the data pass runs.
pub(crate) struct Settings<'a> {
    pub compressor: Compressor,
    pub block_size: u32,
    pub threads: usize,
    pub changing: Changing,
    pub progress: Option<ProgressFn<'a>>,
}

/// What a block is.
#[derive(Clone, Copy)]
enum Target {
    /// A full block of a file (node index).
    Block {
        node: usize,
    },
    /// `count` full blocks of zeros of a file, stored as holes.
    Holes {
        node: usize,
        count: u32,
    },
    Fragment,
    /// A read of a file given up: its blocks so far (`bytes` of content)
    /// leave the image.
    Rewind {
        node: usize,
        bytes: u64,
    },
}

/// A block on its way to the writer.
struct Job {
    seq: u64,
    target: Target,
    data: Vec<u8>,
    /// Uncompressed length.
    raw_len: u64,
    /// Size word once compressed (0 for a hole).
    size_word: u32,
}

/// What the reader decided besides the blocks.
#[derive(Default)]
struct ReaderOut {
    /// node → (fragment index, offset) of its tail.
    tails: HashMap<usize, (u32, u32)>,
    /// node → node whose data it shares.
    duplicates: HashMap<usize, usize>,
    /// See [`Data::settled`].
    settled: HashMap<usize, Stamp>,
}

/// Writes the contents of every regular file of `tree` to `out`; files of
/// input images are read from `images`.
pub(crate) fn write_data(
    tree: &Tree,
    images: &[Image],
    out: &mut Out,
    settings: &Settings,
) -> Result<Data> {
    let threads = match settings.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let in_flight = 4 * threads + 4;
    let (job_tx, job_rx) = sync_channel::<Job>(in_flight);
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = sync_channel::<Result<Job>>(in_flight);
    let (token_tx, token_rx) = sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        // Cannot fail: the channel has room for every token.
        let _ = token_tx.try_send(());
    }
    let files_done = AtomicU64::new(0);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let inputs = Inputs::new(tree, images);
            read_files(tree, &inputs, settings, job_tx, token_rx, &files_done)
        });
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || compress_blocks(settings, job_rx, done_tx));
        }
        drop(done_tx);
        let written = write_blocks(out, done_rx, token_tx, settings, tree, &files_done);
        let read = reader.join().unwrap_or_else(|_| {
            Err(Error::Codec {
                codec: "reader",
                what: "thread panicked".into(),
            })
        });
        // A writer error stops the reader: report the writer's.
        let (mut data, read) = match (written, read) {
            (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
            (Ok(data), Ok(read)) => (data, read),
        };
        for (node, (index, offset)) in read.tails {
            let entry = data.files.entry(node).or_default();
            entry.fragment = index;
            entry.offset = offset;
        }
        for (node, original) in read.duplicates {
            let shared = data.files.get(&original).cloned().unwrap_or_default();
            data.files.insert(node, shared);
        }
        data.settled = read.settled;
        Ok(data)
    })
}

/// Compression thread: compresses jobs until the reader is done.
fn compress_blocks(
    settings: &Settings,
    jobs: &Mutex<Receiver<Job>>,
    done: SyncSender<Result<Job>>,
) {
    let mut codec = match Codec::new(settings.compressor, settings.block_size) {
        Ok(codec) => codec,
        Err(e) => {
            let _ = done.send(Err(e));
            return;
        }
    };
    loop {
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let result = match job.target {
            Target::Holes { .. } | Target::Rewind { .. } => Ok(job),
            _ => codec
                .data_block(std::mem::take(&mut job.data))
                .map(|(bytes, size)| {
                    job.data = bytes;
                    job.size_word = size;
                    job
                }),
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

/// The writer: puts compressed blocks into the image in sequence.
fn write_blocks(
    out: &mut Out,
    done: Receiver<Result<Job>>,
    tokens: SyncSender<()>,
    settings: &Settings,
    tree: &Tree,
    files_done: &AtomicU64,
) -> Result<Data> {
    let mut data = Data {
        files: HashMap::new(),
        fragments: Vec::new(),
        bytes_in: 0,
        settled: HashMap::new(),
    };
    let mut pending = BTreeMap::new();
    let mut next = 0u64;
    let mut last_report = Instant::now();
    let block_size = u64::from(settings.block_size);
    for job in done {
        let job = job?;
        pending.insert(job.seq, job);
        while let Some(job) = pending.remove(&next) {
            next += 1;
            match job.target {
                Target::Block { node } => {
                    file_at(&mut data, node, out.pos).sizes.push(job.size_word)
                }
                Target::Holes { node, count } => {
                    let file = file_at(&mut data, node, out.pos);
                    file.sizes.resize(file.sizes.len() + count as usize, 0);
                    file.sparse += u64::from(count) * block_size;
                }
                Target::Fragment => data.fragments.push((out.pos, job.size_word)),
                Target::Rewind { node, bytes } => {
                    if let Some(file) = data.files.remove(&node) {
                        out.rewind(file.start)?;
                    }
                    data.bytes_in -= bytes;
                }
            }
            data.bytes_in += job.raw_len;
            out.write(&job.data)?;
            // Cannot fail while the reader holds fewer tokens than capacity.
            let _ = tokens.try_send(());
        }
        if let Some(progress) = settings.progress {
            if last_report.elapsed() >= Duration::from_millis(250) {
                last_report = Instant::now();
                progress(&Progress {
                    entries: files_done.load(Ordering::Relaxed),
                    bytes: data.bytes_in,
                    total_bytes: Some(tree.total_bytes),
                });
            }
        }
    }
    if !pending.is_empty() {
        return Err(Error::Codec {
            codec: "writer",
            what: format!("block {next} never arrived"),
        });
    }
    Ok(data)
}

/// The data record of `node`, started at image offset `pos` if new.
fn file_at(data: &mut Data, node: usize, pos: u64) -> &mut FileData {
    data.files.entry(node).or_insert_with(|| FileData {
        start: pos,
        fragment: NONE_U32,
        ..FileData::default()
    })
}

/// Reader state.
struct Reader<'a> {
    inputs: &'a Inputs<'a>,
    block_size: usize,
    /// [`Changing::Settle`]: a changing file is read again.
    settle: bool,
    jobs: SyncSender<Job>,
    tokens: Receiver<()>,
    seq: u64,
    /// Content bytes sent since the current read of a file began.
    streamed: u64,
    fragments: Fragments,
    out: ReaderOut,
}

/// The reader thread: streams every distinct file's blocks into the
/// pipeline, in writing order.
fn read_files(
    tree: &Tree,
    inputs: &Inputs,
    settings: &Settings,
    jobs: SyncSender<Job>,
    tokens: Receiver<()>,
    files_done: &AtomicU64,
) -> Result<ReaderOut> {
    let block_size = settings.block_size;
    let mut r = Reader {
        inputs,
        block_size: block_size as usize,
        settle: settings.changing == Changing::Settle,
        jobs,
        tokens,
        seq: 0,
        streamed: 0,
        fragments: Fragments::new(block_size as usize),
        out: ReaderOut::default(),
    };
    let mut size_count: HashMap<u64, u32> = HashMap::new();
    for node in &tree.nodes {
        if let Kind::File { size, .. } = node.kind {
            *size_count.entry(size).or_default() += 1;
        }
    }
    let bs = block_size as usize;
    // (size, content hash) → nodes packed with that content.
    let mut seen: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    for &node in &tree.order {
        let Kind::File { source, size } = &tree.nodes[node].kind else {
            continue;
        };
        files_done.fetch_add(1, Ordering::Relaxed);
        if *size == 0 {
            continue;
        }
        let mut key = None;
        if size_count.get(size).copied().unwrap_or(0) > 1 {
            let found = source::hash(inputs, source, *size, bs).and_then(|hash| {
                let candidates = seen.get(&(*size, hash)).map_or(&[][..], Vec::as_slice);
                for &cand in candidates {
                    if let Kind::File { source: other, .. } = &tree.nodes[cand].kind {
                        if source::same(inputs, source, other, *size, bs)? {
                            return Ok((hash, Some(cand)));
                        }
                    }
                }
                Ok((hash, None))
            });
            match found {
                Ok((_, Some(original))) => {
                    r.out.duplicates.insert(node, original);
                    continue;
                }
                Ok((hash, None)) => key = Some((*size, hash)),
                // One of them changes: not a duplicate (this one is read
                // again below).
                Err(Error::Changed { .. }) if r.settle => {}
                Err(e) => return Err(e),
            }
        }
        match r.store_file(node, source, *size)? {
            Some(seen_then) => {
                r.out.settled.insert(node, seen_then);
            }
            None => {
                if let Some(key) = key {
                    seen.entry(key).or_default().push(node);
                }
            }
        }
    }
    if let Some(last) = r.fragments.finish() {
        r.send_fragment(last)?;
    }
    Ok(r.out)
}

impl Reader<'_> {
    /// Queues a block, waiting for a token.
    fn send(&mut self, target: Target, data: Vec<u8>, raw_len: u64) -> Result<()> {
        let stopped = || Error::Codec {
            codec: "writer",
            what: "stopped".into(),
        };
        self.tokens.recv().map_err(|_| stopped())?;
        let job = Job {
            seq: self.seq,
            target,
            data,
            raw_len,
            size_word: 0,
        };
        self.seq += 1;
        self.streamed += raw_len;
        self.jobs.send(job).map_err(|_| stopped())
    }

    fn send_fragment(&mut self, data: Vec<u8>) -> Result<()> {
        let len = data.len() as u64;
        self.send(Target::Fragment, data, len)
    }

    /// Queues a run of `count` hole blocks of `node`, if any.
    fn send_holes(&mut self, node: usize, count: &mut u32) -> Result<()> {
        if *count > 0 {
            let raw_len = u64::from(*count) * self.block_size as u64;
            self.send(
                Target::Holes {
                    node,
                    count: *count,
                },
                Vec::new(),
                raw_len,
            )?;
            *count = 0;
        }
        Ok(())
    }

    /// Stores one file of `size` bytes as scanned (`None`), or, under
    /// [`Changing::Settle`], if it changes, as a later read saw it (see
    /// there): returns that read's size and mtime.
    fn store_file(&mut self, node: usize, source: &Source, size: u64) -> Result<Option<Stamp>> {
        let inputs = self.inputs;
        let reads = if self.settle { SETTLE_READS } else { 1 };
        let mut read = 1;
        loop {
            let as_is = self.settle && read == reads;
            let content = if read == 1 {
                inputs.open(source, size, self.block_size)
            } else {
                inputs.reopen(source, size, self.block_size, as_is)
            };
            self.streamed = 0;
            match content.and_then(|c| self.stream(node, c)) {
                Ok(_) if read == 1 => return Ok(None),
                Ok(seen) => return Ok(seen),
                Err(Error::Changed { .. }) if self.settle && !as_is => {
                    let bytes = self.streamed;
                    if bytes > 0 {
                        self.send(Target::Rewind { node, bytes }, Vec::new(), 0)?;
                    }
                    read += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Streams one read of a file: full blocks to the compressors (zeros as
    /// holes), then, if the read held, the tail into the fragment block.
    /// Returns how the read saw the file (see [`Content::finish`]).
    fn stream(&mut self, node: usize, mut content: Content) -> Result<Option<Stamp>> {
        let inputs = self.inputs;
        let mut holes = 0u32;
        let mut tail = None;
        while let Some(chunk) = content.next(inputs)? {
            let len = chunk.len();
            let full = len == self.block_size;
            let zero = match chunk {
                Chunk::Hole(_) => true,
                Chunk::Data(b) => source::is_zero(b),
            };
            if full && zero {
                if holes == u32::MAX {
                    self.send_holes(node, &mut holes)?;
                }
                holes += 1;
                continue;
            }
            let bytes = match chunk {
                Chunk::Data(b) => b.to_vec(),
                Chunk::Hole(n) => vec![0u8; n],
            };
            self.send_holes(node, &mut holes)?;
            if full {
                self.send(Target::Block { node }, bytes, len as u64)?;
            } else {
                // A short chunk is the last.
                tail = Some(bytes);
            }
        }
        self.send_holes(node, &mut holes)?;
        let seen = content.finish()?;
        if let Some(tail) = tail {
            let (place, closed) = self.fragments.add(&tail);
            if let Some(closed) = closed {
                self.send_fragment(closed)?;
            }
            self.out.tails.insert(node, place);
        }
        Ok(seen)
    }
}

/// Packs file tails into fragment blocks, in order, back to back: a block
/// is closed when the next tail does not fit, so only its unused end (not
/// stored: blocks are as long as their content) separates tails.
struct Fragments {
    block_size: usize,
    /// The block being filled and its index.
    current: Vec<u8>,
    index: u32,
}

impl Fragments {
    fn new(block_size: usize) -> Self {
        Fragments {
            block_size,
            current: Vec::new(),
            index: 0,
        }
    }

    /// Adds a tail (shorter than a block): returns its (fragment index,
    /// offset) and the block closed to make room, if any.
    fn add(&mut self, tail: &[u8]) -> ((u32, u32), Option<Vec<u8>>) {
        let mut full = None;
        if self.current.len() + tail.len() > self.block_size {
            full = Some(std::mem::take(&mut self.current));
            self.index += 1;
        }
        // Offsets are below the block size (at most 1 MiB).
        let place = (self.index, self.current.len() as u32);
        self.current.extend_from_slice(tail);
        (place, full)
    }

    /// The last, partly filled block, if any.
    fn finish(&mut self) -> Option<Vec<u8>> {
        (!self.current.is_empty()).then(|| std::mem::take(&mut self.current))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_pack_back_to_back_into_fragments() {
        let mut f = Fragments::new(100);
        assert_eq!(f.add(&[1; 30]), ((0, 0), None));
        assert_eq!(f.add(&[2; 70]), ((0, 30), None), "fills exactly");
        let (place, full) = f.add(&[3; 1]);
        assert_eq!(place, (1, 0));
        let full = full.unwrap();
        assert_eq!(full.len(), 100);
        assert_eq!((full[29], full[30], full[99]), (1, 2, 2));
        assert_eq!(f.add(&[4; 60]), ((1, 1), None));
        let (place, full) = f.add(&[5; 40]);
        assert_eq!(place, (2, 0), "61 + 40 > 100");
        assert_eq!(full.map(|b| b.len()), Some(61));
        assert_eq!(f.finish(), Some(vec![5; 40]));
        assert_eq!(f.finish(), None);
    }
}
