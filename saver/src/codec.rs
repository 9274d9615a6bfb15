//! The codec on the command line: `saver pack`, `saver merge`, `saver
//! unpack` and `saver verify`, for users, scripts and `cargo xtask bench`.

use crate::progress::Reporter;
use crate::session::load_exclude;
use crate::space::human;
use anyhow::{bail, Context, Result};
use ramstick_squash::{Compressor, Exclude, PackOptions, Progress, UnpackOptions};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Block compressors of `saver pack --compressor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

/// `saver pack DIR IMAGE`.
#[derive(clap::Args, Debug)]
pub struct PackArgs {
    /// The directory tree to pack.
    pub dir: PathBuf,
    /// The image to write (replaced if it exists).
    pub image: PathBuf,
    /// Leave out paths matching the glob patterns of this file (one a line,
    /// from the tree's root: `/tmp/*`; `#` comments).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Option<PathBuf>,
    /// Block compressor.
    #[arg(long, value_enum, default_value = "zstd")]
    pub compressor: Algorithm,
    /// Compression level (zstd 1-22, default 15; gzip 1-9, default 9).
    #[arg(long)]
    pub level: Option<i32>,
    /// Data block size in bytes, a power of two from 4096 to 1048576 (K/M suffixes allowed).
    #[arg(long, value_parser = parse_block_size)]
    pub block_size: Option<u32>,
    /// Compression threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress and no summary.
    #[arg(long)]
    pub quiet: bool,
}

/// `saver merge IMAGE LAYER...`.
#[derive(clap::Args, Debug)]
pub struct MergeArgs {
    /// The image to write (replaced if it exists).
    pub image: PathBuf,
    /// The layers to merge, bottom first (overlay semantics: a whiteout
    /// removes, an opaque directory hides what is below).
    #[arg(required = true, num_args = 1..)]
    pub layers: Vec<PathBuf>,
    /// Compression level of zstd (default 15).
    #[arg(long)]
    pub level: Option<i32>,
    /// No summary.
    #[arg(long)]
    pub quiet: bool,
}

/// `saver unpack IMAGE DIR`.
#[derive(clap::Args, Debug)]
pub struct UnpackArgs {
    /// The image to read.
    pub image: PathBuf,
    /// The directory to fill (created if missing; must not hold the image's names).
    pub dir: PathBuf,
    /// Decompression threads (default: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress and no summary.
    #[arg(long)]
    pub quiet: bool,
}

/// `saver verify IMAGE DIR`.
#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The image to check.
    pub image: PathBuf,
    /// The directory it should hold exactly.
    pub dir: PathBuf,
    /// Ignore paths of the directory matching these patterns (as `pack --exclude-from`).
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Option<PathBuf>,
}

/// `128K`, `1M` or a plain number of bytes.
fn parse_block_size(text: &str) -> Result<u32, String> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        _ => return Err(format!("unknown unit {unit:?} (use K or M)")),
    };
    let n: u32 = digits.parse().map_err(|e| format!("{text:?}: {e}"))?;
    let size = n
        .checked_shl(shift)
        .filter(|s| s.checked_shr(shift) == Some(n))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if !size.is_power_of_two() || !(4096..=1 << 20).contains(&size) {
        return Err(format!("{text:?}: must be a power of two from 4K to 1M"));
    }
    Ok(size)
}

/// The compressor asked for on the command line.
fn compressor(algorithm: Algorithm, level: Option<i32>) -> Result<Compressor> {
    Ok(match (algorithm, level) {
        (Algorithm::Zstd, None) => Compressor::default(),
        (Algorithm::Zstd, Some(l @ 1..=22)) => Compressor::Zstd(l),
        (Algorithm::Gzip, None) => Compressor::Gzip(9),
        (Algorithm::Gzip, Some(l @ 1..=9)) => Compressor::Gzip(l.unsigned_abs()),
        (Algorithm::Xz, None) => Compressor::Xz,
        (Algorithm::Lz4, None) => Compressor::Lz4,
        (Algorithm::Zstd | Algorithm::Gzip, Some(l)) => {
            bail!("--level {l} is out of range for {algorithm:?} (zstd 1-22, gzip 1-9)")
        }
        (Algorithm::Xz | Algorithm::Lz4, Some(_)) => {
            bail!("--level applies to zstd and gzip only")
        }
    })
}

/// The exclusion list of `--exclude-from`, or none.
fn exclude_from(file: Option<&Path>) -> Result<Exclude> {
    match file {
        Some(f) if !f.exists() => bail!("{}: no such exclusion file", f.display()),
        Some(f) => load_exclude(f),
        None => Ok(Exclude::none()),
    }
}

pub fn pack(a: &PackArgs) -> Result<()> {
    let exclude = exclude_from(a.exclude_from.as_deref())?;
    let reporter = Reporter::new("packing");
    let progress = |p: &Progress| reporter.report(p);
    let mut options = PackOptions {
        compressor: compressor(a.compressor, a.level)?,
        threads: a.threads,
        exclude: &exclude,
        progress: (!a.quiet).then_some(&progress as _),
        ..PackOptions::default()
    };
    if let Some(size) = a.block_size {
        options.block_size = size;
    }
    let t = Instant::now();
    let stats = ramstick_squash::pack(&a.dir, &a.image, &options)
        .with_context(|| format!("cannot pack {} into {}", a.dir.display(), a.image.display()))?;
    if !a.quiet {
        eprintln!(
            "saver: packed {} entries ({} of file data) into {} ({}) in {:.1} s",
            stats.entries,
            human(stats.bytes_in),
            a.image.display(),
            human(stats.image_size),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub fn merge(a: &MergeArgs) -> Result<()> {
    let options = PackOptions {
        compressor: compressor(Algorithm::Zstd, a.level)?,
        ..PackOptions::default()
    };
    let layers: Vec<&Path> = a.layers.iter().map(PathBuf::as_path).collect();
    let t = Instant::now();
    let stats = ramstick_squash::merge(&layers, &a.image, &options)
        .with_context(|| format!("cannot merge into {}", a.image.display()))?;
    if !a.quiet {
        eprintln!(
            "saver: merged {} layers ({} entries) into {} ({}) in {:.1} s",
            layers.len(),
            stats.entries,
            a.image.display(),
            human(stats.image_size),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

pub fn unpack(a: &UnpackArgs) -> Result<()> {
    std::fs::create_dir_all(&a.dir)
        .with_context(|| format!("cannot create {}", a.dir.display()))?;
    let reporter = Reporter::new("unpacking");
    let progress = |p: &Progress| reporter.report(p);
    let options = UnpackOptions {
        threads: a.threads,
        progress: (!a.quiet).then_some(&progress as _),
    };
    let t = Instant::now();
    let stats = ramstick_squash::unpack(&a.image, &a.dir, &options).with_context(|| {
        format!(
            "cannot unpack {} into {}",
            a.image.display(),
            a.dir.display()
        )
    })?;
    if !a.quiet {
        eprintln!(
            "saver: unpacked {} entries ({} of file data) into {} in {:.1} s",
            stats.entries,
            human(stats.bytes),
            a.dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Lists the differences on stdout; Ok(true) when identical.
pub fn verify(a: &VerifyArgs) -> Result<bool> {
    let exclude = exclude_from(a.exclude_from.as_deref())?;
    let diffs = ramstick_squash::verify(&a.image, &a.dir, &exclude).with_context(|| {
        format!(
            "cannot compare {} with {}",
            a.image.display(),
            a.dir.display()
        )
    })?;
    for d in &diffs {
        println!("{d}");
    }
    if diffs.is_empty() {
        eprintln!(
            "saver: {} holds exactly {}",
            a.image.display(),
            a.dir.display()
        );
    } else {
        eprintln!(
            "saver: {} differences between {} and {}",
            diffs.len(),
            a.image.display(),
            a.dir.display()
        );
    }
    Ok(diffs.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        assert_eq!(parse_block_size("131072"), Ok(131072));
        assert_eq!(parse_block_size("128K"), Ok(131072));
        assert_eq!(parse_block_size("1M"), Ok(1 << 20));
        assert!(parse_block_size("2M").is_err());
        assert!(parse_block_size("1000").is_err());
        assert!(parse_block_size("12Q").is_err());
        assert!(parse_block_size("99999999999K").is_err());
    }

    #[test]
    fn compressors_and_levels() {
        assert_eq!(
            compressor(Algorithm::Zstd, None).unwrap(),
            Compressor::Zstd(15)
        );
        assert_eq!(
            compressor(Algorithm::Zstd, Some(3)).unwrap(),
            Compressor::Zstd(3)
        );
        assert_eq!(
            compressor(Algorithm::Gzip, Some(6)).unwrap(),
            Compressor::Gzip(6)
        );
        assert_eq!(compressor(Algorithm::Lz4, None).unwrap(), Compressor::Lz4);
        assert!(compressor(Algorithm::Gzip, Some(12)).is_err());
        assert!(compressor(Algorithm::Xz, Some(3)).is_err());
    }
}
