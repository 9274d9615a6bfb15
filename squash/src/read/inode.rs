//! Parsing of inodes, directory listings and xattrs out of an opened
//! [`Image`]'s decompressed tables. Every count, size and reference is
//! checked; a failed check is an [`Error::Corrupt`].

use super::check_name;
use super::image::{locate, Cur, Image};
use crate::format::{self, inode as itype, DATA_UNCOMPRESSED, NONE_U32};
use crate::Result;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What an inode is, with the type-specific fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir {
        block: u32,
        offset: u16,
        /// Listing bytes (the stored size minus 3).
        size: u32,
    },
    File(FileData),
    Symlink(Vec<u8>),
    BlockDev(u32),
    CharDev(u32),
    Fifo,
    Socket,
}

/// Where a regular file's contents are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileData {
    pub size: u64,
    /// Absolute offset of the first data block.
    pub start: u64,
    /// Size words of the full blocks (0 = a hole).
    pub blocks: Vec<u32>,
    /// (fragment index, offset in it) of the tail.
    pub fragment: Option<(u32, u32)>,
}

/// A parsed inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Inode {
    pub number: u32,
    /// Permission bits (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u32,
    pub nlink: u32,
    /// Index into the xattr id table, or [`NONE_U32`].
    pub xattr: u32,
    pub kind: Kind,
}

impl Inode {
    /// The basic inode type (as directory entries store it).
    pub(crate) fn basic_type(&self) -> u16 {
        match self.kind {
            Kind::Dir { .. } => itype::DIR,
            Kind::File(_) => itype::FILE,
            Kind::Symlink(_) => itype::SYMLINK,
            Kind::BlockDev(_) => itype::BLOCK_DEV,
            Kind::CharDev(_) => itype::CHAR_DEV,
            Kind::Fifo => itype::FIFO,
            Kind::Socket => itype::SOCKET,
        }
    }
}

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: Vec<u8>,
    pub inode_ref: u64,
    pub number: u32,
    pub basic_type: u16,
}

/// A checked directory entry with its inode (see [`Image::children`]).
#[derive(Debug, Clone)]
pub(crate) struct Child {
    pub name: Vec<u8>,
    pub inode_ref: u64,
    pub inode: Inode,
}

impl Image {
    /// The entries of directory `dir` (at `path`, named in errors) with
    /// their inodes, checked: every name is one plain component, names are
    /// sorted and unique, and each entry's type and inode number are its
    /// inode's. Any failure is [`Error::Corrupt`].
    pub(crate) fn children(&self, dir: &Inode, path: &Path) -> Result<Vec<Child>> {
        let entries = self.entries(dir)?;
        let mut out: Vec<Child> = Vec::with_capacity(entries.len());
        for e in entries {
            let at = || path.join(OsStr::from_bytes(&e.name)).display().to_string();
            check_name(&e.name).map_err(|w| self.corrupt(format!("{}: {w}", at())))?;
            match out.last() {
                Some(prev) if prev.name == e.name => {
                    return Err(self.corrupt(format!("{}: duplicate name", at())))
                }
                Some(prev) if prev.name > e.name => {
                    return Err(self.corrupt(format!("{}: directory not sorted", at())))
                }
                _ => {}
            }
            let inode = self.inode(e.inode_ref)?;
            if inode.basic_type() != e.basic_type || inode.number != e.number {
                return Err(self.corrupt(format!(
                    "{}: entry says type {} inode {}, inode is type {} number {}",
                    at(),
                    e.basic_type,
                    e.number,
                    inode.basic_type(),
                    inode.number
                )));
            }
            out.push(Child {
                name: e.name,
                inode_ref: e.inode_ref,
                inode,
            });
        }
        Ok(out)
    }

    /// Parses the inode at a metadata reference.
    pub(crate) fn inode(&self, r: u64) -> Result<Inode> {
        let pos = self.locate_in(&self.inodes, r, "inode")?;
        let mut c = Cur {
            data: &self.inodes.data,
            pos,
            what: "inode table",
        };
        self.parse_inode(&mut c).map_err(|e| self.corrupt(e))
    }

    fn parse_inode(&self, c: &mut Cur) -> Result<Inode, String> {
        let typ = c.u16()?;
        let mode = c.u16()?;
        let uid = c.u16()?;
        let gid = c.u16()?;
        let mtime = c.u32()?;
        let number = c.u32()?;
        let mut xattr = NONE_U32;
        let (nlink, kind) = match typ {
            itype::DIR => {
                let block = c.u32()?;
                let nlink = c.u32()?;
                let size = u32::from(c.u16()?);
                let offset = c.u16()?;
                c.u32()?; // parent
                (nlink, dir_kind(block, offset, size)?)
            }
            itype::EXT_DIR => {
                let nlink = c.u32()?;
                let size = c.u32()?;
                let block = c.u32()?;
                c.u32()?; // parent
                c.u16()?; // index count
                let offset = c.u16()?;
                xattr = c.u32()?;
                (nlink, dir_kind(block, offset, size)?)
            }
            itype::FILE => {
                let start = u64::from(c.u32()?);
                let frag = c.u32()?;
                let frag_off = c.u32()?;
                let size = u64::from(c.u32()?);
                (
                    1,
                    Kind::File(self.file_data(c, start, size, frag, frag_off)?),
                )
            }
            itype::EXT_FILE => {
                let start = c.u64()?;
                let size = c.u64()?;
                c.u64()?; // sparse bytes
                let nlink = c.u32()?;
                let frag = c.u32()?;
                let frag_off = c.u32()?;
                xattr = c.u32()?;
                (
                    nlink,
                    Kind::File(self.file_data(c, start, size, frag, frag_off)?),
                )
            }
            itype::SYMLINK | itype::EXT_SYMLINK => {
                let nlink = c.u32()?;
                let len = c.u32()? as usize;
                let target = c.take(len)?.to_vec();
                if typ == itype::EXT_SYMLINK {
                    xattr = c.u32()?;
                }
                if target.is_empty() || target.contains(&0) {
                    return Err("symlink target empty or containing NUL".into());
                }
                (nlink, Kind::Symlink(target))
            }
            itype::BLOCK_DEV | itype::CHAR_DEV | itype::EXT_BLOCK_DEV | itype::EXT_CHAR_DEV => {
                let nlink = c.u32()?;
                let rdev = c.u32()?;
                if typ > itype::SOCKET {
                    xattr = c.u32()?;
                }
                let kind = if typ % itype::EXT == itype::BLOCK_DEV {
                    Kind::BlockDev(rdev)
                } else {
                    Kind::CharDev(rdev)
                };
                (nlink, kind)
            }
            itype::FIFO | itype::SOCKET | itype::EXT_FIFO | itype::EXT_SOCKET => {
                let nlink = c.u32()?;
                if typ > itype::SOCKET {
                    xattr = c.u32()?;
                }
                let kind = if typ % itype::EXT == itype::FIFO {
                    Kind::Fifo
                } else {
                    Kind::Socket
                };
                (nlink, kind)
            }
            other => return Err(format!("unknown inode type {other}")),
        };
        if xattr != NONE_U32 && xattr as usize >= self.xattr_ids.len() {
            return Err(format!("xattr index {xattr} out of range"));
        }
        Ok(Inode {
            number,
            perm: u32::from(mode) & 0o7777,
            uid: self.id(uid)?,
            gid: self.id(gid)?,
            mtime,
            nlink,
            xattr,
            kind,
        })
    }

    fn file_data(
        &self,
        c: &mut Cur,
        start: u64,
        size: u64,
        frag: u32,
        frag_off: u32,
    ) -> Result<FileData, String> {
        let bs = u64::from(self.sb.block_size);
        let tail = size % bs;
        let has_frag = frag != NONE_U32;
        let n = if has_frag {
            size / bs
        } else {
            size.div_ceil(bs)
        };
        if n > (c.remaining() / 4) as u64 {
            return Err(format!("file of {size} bytes: block list past the table"));
        }
        let mut blocks = Vec::with_capacity(n as usize);
        let mut end = start;
        for _ in 0..n {
            let w = c.u32()?;
            let len = u64::from(w & !DATA_UNCOMPRESSED);
            if w & !DATA_UNCOMPRESSED & !(DATA_UNCOMPRESSED - 1) != 0 || len > bs {
                return Err(format!("data block size word {w:#x} invalid"));
            }
            end = end.checked_add(len).ok_or("file data offsets overflow")?;
            blocks.push(w);
        }
        if end > self.sb.bytes_used {
            return Err(format!("file data at {start}..{end} lies past the end"));
        }
        let fragment = if has_frag {
            let f = self
                .fragments
                .get(frag as usize)
                .ok_or(format!("fragment index {frag} out of range"))?;
            if tail == 0
                || u64::from(frag_off) + tail > bs
                || f.size & !DATA_UNCOMPRESSED > self.sb.block_size
            {
                return Err(format!("fragment {frag} offset {frag_off} invalid"));
            }
            Some((frag, frag_off))
        } else {
            None
        };
        Ok(FileData {
            size,
            start,
            blocks,
            fragment,
        })
    }

    /// The entries of a directory inode, in stored (sorted) order. Names are
    /// returned as stored; callers check them.
    pub(crate) fn entries(&self, dir: &Inode) -> Result<Vec<Entry>> {
        let Kind::Dir {
            block,
            offset,
            size,
        } = dir.kind
        else {
            return Err(self.corrupt("listing a non-directory"));
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        let pos = self.locate_in(
            &self.dirs,
            format::meta_ref(u64::from(block), offset),
            "directory",
        )?;
        let end = pos
            .checked_add(size as usize)
            .filter(|&e| e <= self.dirs.data.len())
            .ok_or_else(|| self.corrupt("directory listing past the directory table"))?;
        let mut c = Cur {
            data: &self.dirs.data[..end],
            pos,
            what: "directory listing",
        };
        let mut out = Vec::new();
        while c.remaining() > 0 {
            self.parse_dir_run(&mut c, &mut out)
                .map_err(|e| self.corrupt(e))?;
        }
        Ok(out)
    }

    fn parse_dir_run(&self, c: &mut Cur, out: &mut Vec<Entry>) -> Result<(), String> {
        let count = c.u32()? as usize + 1;
        let start = c.u32()?;
        let base = c.u32()?;
        if count > format::DIR_HEADER_MAX_ENTRIES {
            return Err(format!("directory header with {count} entries"));
        }
        for _ in 0..count {
            let offset = c.u16()?;
            let delta = c.u16()? as i16;
            let basic_type = c.u16()?;
            let name_len = usize::from(c.u16()?) + 1;
            if name_len > format::MAX_NAME {
                return Err(format!("name of {name_len} bytes"));
            }
            let name = c.take(name_len)?.to_vec();
            out.push(Entry {
                name,
                inode_ref: format::meta_ref(u64::from(start), offset),
                number: base.wrapping_add_signed(i32::from(delta)),
                basic_type,
            });
        }
        Ok(())
    }

    /// The xattrs (full name, value) of an inode, in stored order.
    pub(crate) fn xattrs(&self, inode: &Inode) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        if inode.xattr == NONE_U32 {
            return Ok(Vec::new());
        }
        let (r, count) = self.xattr_ids[inode.xattr as usize];
        let pos = self.locate_in(&self.xattr_kv, r, "xattr")?;
        let mut c = Cur {
            data: &self.xattr_kv.data,
            pos,
            what: "xattr table",
        };
        let mut out = Vec::new();
        for _ in 0..count {
            out.push(self.parse_xattr(&mut c).map_err(|e| self.corrupt(e))?);
        }
        Ok(out)
    }

    fn parse_xattr(&self, c: &mut Cur) -> Result<(Vec<u8>, Vec<u8>), String> {
        let typ = c.u16()?;
        let name_len = usize::from(c.u16()?);
        let prefix = format::xattr::PREFIXES
            .iter()
            .find(|(t, _)| *t == typ & !format::xattr::VALUE_OOL)
            .map(|(_, p)| *p)
            .ok_or(format!("xattr type {typ:#x} unknown"))?;
        let mut name = prefix.as_bytes().to_vec();
        name.extend_from_slice(c.take(name_len)?);
        if name_len == 0 || name.contains(&0) {
            return Err("xattr name empty or containing NUL".into());
        }
        let vlen = c.u32()? as usize;
        let value = c.take(vlen)?;
        if typ & format::xattr::VALUE_OOL == 0 {
            return Ok((name, value.to_vec()));
        }
        if vlen != 8 {
            return Err("out-of-line xattr reference of a bad size".into());
        }
        let mut a = [0u8; 8];
        a.copy_from_slice(value);
        let pos = locate(&self.xattr_kv, u64::from_le_bytes(a), "xattr value")?;
        let mut v = Cur {
            data: &self.xattr_kv.data,
            pos,
            what: "xattr table",
        };
        let vlen = v.u32()? as usize;
        Ok((name, v.take(vlen)?.to_vec()))
    }
}

fn dir_kind(block: u32, offset: u16, size: u32) -> Result<Kind, String> {
    if size < 3 {
        return Err(format!("directory size {size} below 3"));
    }
    Ok(Kind::Dir {
        block,
        offset,
        size: size - 3,
    })
}
