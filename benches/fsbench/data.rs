//! Deterministic content: every byte of every file the benchmark writes or reads is a function
//! of a per-file seed and the byte's offset, so any range can be generated and checked without
//! keeping the data around, and a wrong byte is reported with its offset.

use std::fs;
use std::io::Write;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn word(seed: u64, index: u64) -> u64 {
    splitmix64(seed.wrapping_mul(0xd605_bbb5_8c8a_bbfd) ^ index)
}

/// Fill `buf` with the bytes of stream `seed` starting at byte `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    // Unaligned head.
    while i < buf.len() && !pos.is_multiple_of(8) {
        buf[i] = word(seed, pos / 8).to_le_bytes()[(pos % 8) as usize];
        i += 1;
        pos += 1;
    }
    let mut chunks = buf[i..].chunks_exact_mut(8);
    let mut w = pos / 8;
    for chunk in &mut chunks {
        chunk.copy_from_slice(&word(seed, w).to_le_bytes());
        w += 1;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let bytes = word(seed, w).to_le_bytes();
        let n = tail.len();
        tail.copy_from_slice(&bytes[..n]);
    }
}

/// The `len` bytes of stream `seed` at `offset`.
pub fn generate(seed: u64, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fill(seed, offset, &mut buf);
    buf
}

/// Incremental verifier of a stream read front to back.
pub struct Checker {
    seed: u64,
    pos: u64,
    scratch: Vec<u8>,
}

impl Checker {
    pub fn new(seed: u64) -> Self {
        Self::at(seed, 0)
    }

    pub fn at(seed: u64, pos: u64) -> Self {
        Checker {
            seed,
            pos,
            scratch: Vec::new(),
        }
    }

    /// Check the next `data.len()` bytes.
    pub fn update(&mut self, data: &[u8]) -> Result<(), String> {
        self.scratch.resize(data.len(), 0);
        fill(self.seed, self.pos, &mut self.scratch);
        if let Some(i) = data.iter().zip(&self.scratch).position(|(a, b)| a != b) {
            return Err(format!("content differs at byte {}", self.pos + i as u64));
        }
        self.pos += data.len() as u64;
        Ok(())
    }

    pub fn pos(&self) -> u64 {
        self.pos
    }
}

/// One file of a generated tree.
#[derive(Clone, Debug)]
pub struct TreeFile {
    /// Path relative to the tree's root, `/`-separated.
    pub rel: String,
    pub size: u64,
    pub seed: u64,
}

/// A source-like tree: directories a few levels deep, many small files and a few large ones.
#[derive(Clone, Debug)]
pub struct Tree {
    pub dirs: Vec<String>,
    pub files: Vec<TreeFile>,
}

impl Tree {
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// `files` files of about `total` bytes in all. Sizes are log-normal (median ~5 KiB, a long
    /// tail up to 4 MiB), scaled to the total, as in a typical C/Rust source checkout.
    pub fn generate(files: usize, total: u64, seed: u64) -> Tree {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir_count = (files / 14).max(1);
        let mut dirs: Vec<String> = Vec::with_capacity(dir_count);
        for i in 0..dir_count {
            // Each new directory goes under a random earlier one (or the root), depth <= 5.
            let parent = if i == 0 || rng.random_bool(0.15) {
                None
            } else {
                let p = &dirs[rng.random_range(0..dirs.len())];
                (p.matches('/').count() < 4).then(|| p.clone())
            };
            let name = format!("d{i:04}");
            dirs.push(match parent {
                Some(p) => format!("{p}/{name}"),
                None => name,
            });
        }
        let raw: Vec<f64> = (0..files)
            .map(|_| {
                // Box-Muller normal sample.
                let u1: f64 = rng.random::<f64>().max(1e-12);
                let u2: f64 = rng.random();
                let n = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
                (8.5 + 1.4 * n).exp().min(4.0 * 1024.0 * 1024.0)
            })
            .collect();
        let scale = total as f64 / raw.iter().sum::<f64>();
        let exts = ["c", "h", "rs", "py", "md", "txt", "json", "S"];
        let files = raw
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let dir = &dirs[rng.random_range(0..dirs.len())];
                TreeFile {
                    rel: format!("{dir}/f{i:05}.{}", exts[i % exts.len()]),
                    size: ((s * scale) as u64).min(8 * 1024 * 1024),
                    seed: seed.wrapping_add(1 + i as u64),
                }
            })
            .collect();
        Tree { dirs, files }
    }

    /// Write the tree under `root` on a local filesystem.
    pub fn write_to(&self, root: &Path) -> Result<(), String> {
        for d in &self.dirs {
            fs::create_dir_all(root.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        for f in &self.files {
            let data = generate(f.seed, 0, f.size as usize);
            fs::File::create(root.join(&f.rel))
                .and_then(|mut file| file.write_all(&data))
                .map_err(|e| format!("write {}: {e}", f.rel))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fill_is_offset_consistent() {
        use super::{generate, Checker};
        let whole = generate(7, 0, 100);
        for start in 0..20 {
            assert_eq!(generate(7, start as u64, 37), whole[start..start + 37]);
        }
        let mut c = Checker::new(7);
        c.update(&whole[..13]).unwrap();
        c.update(&whole[13..]).unwrap();
        let mut bad = whole.clone();
        bad[50] ^= 1;
        assert!(Checker::new(7).update(&bad).unwrap_err().contains("byte 50"));
    }
}
