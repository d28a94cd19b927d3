//! File identity. A file is known by the hash of its first bytes (its head), so that a renamed
//! file, or a copytruncate copy, is recognized as content already read wherever it appears. A
//! file shorter than [`FINGERPRINT_BYTES`] cannot be told apart by content alone, so for those
//! the device and inode must match as well, and the head hash must still match the first bytes
//! (a reused inode with other content is a new file). This is the same trade-off Vector's
//! fingerprinter makes: two files whose first 256 bytes are identical are taken for one.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Serialize};

/// How many leading bytes make a fingerprint.
pub const FINGERPRINT_BYTES: u32 = 256;

/// Device and inode of an open file or a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DevIno {
    pub dev: u64,
    pub ino: u64,
}

impl DevIno {
    pub fn of(meta: &std::fs::Metadata) -> DevIno {
        DevIno {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// The hash of a file's first `len` bytes (`len` is at most [`FINGERPRINT_BYTES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub len: u32,
    pub hash: u64,
}

impl Head {
    /// Reads the head of `file`: its first [`FINGERPRINT_BYTES`] bytes, or all of it if shorter.
    pub fn read(file: &File) -> io::Result<Head> {
        Head::read_len(file, FINGERPRINT_BYTES)
    }

    /// The hash of the first `len` bytes, or of fewer if the file is shorter.
    pub fn read_len(file: &File, len: u32) -> io::Result<Head> {
        let mut buf = [0u8; FINGERPRINT_BYTES as usize];
        let want = (len.min(FINGERPRINT_BYTES)) as usize;
        let mut got = 0;
        while got < want {
            match file.read_at(&mut buf[got..want], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(Head {
            len: got as u32,
            hash: xxhash_rust::xxh3::xxh3_64(&buf[..got]),
        })
    }

    /// The head of `bytes` (the first [`FINGERPRINT_BYTES`] of them count).
    pub fn of(bytes: &[u8]) -> Head {
        let bytes = &bytes[..bytes.len().min(FINGERPRINT_BYTES as usize)];
        Head {
            len: bytes.len() as u32,
            hash: xxhash_rust::xxh3::xxh3_64(bytes),
        }
    }

    /// The first [`FINGERPRINT_BYTES`] of `file` (all of it if shorter).
    pub fn read_bytes(file: &File) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; FINGERPRINT_BYTES as usize];
        let mut got = 0;
        while got < buf.len() {
            match file.read_at(&mut buf[got..], got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        buf.truncate(got);
        Ok(buf)
    }

    /// A full-length head identifies a file by content alone.
    pub fn is_fingerprint(&self) -> bool {
        self.len == FINGERPRINT_BYTES
    }

    /// Whether `file` still starts with the bytes this head was taken from.
    pub fn is_prefix_of(&self, file: &File) -> io::Result<bool> {
        let now = Head::read_len(file, self.len)?;
        Ok(now == *self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn head_is_a_fingerprint_once_the_file_is_long_enough() {
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(b"short\n").expect("write");
        let short = Head::read(&f).expect("head");
        assert_eq!(short.len, 6);
        assert!(!short.is_fingerprint());
        f.write_all(&[b'x'; 400]).expect("write");
        let long = Head::read(&f).expect("head");
        assert!(long.is_fingerprint());
        assert!(short.is_prefix_of(&f).expect("read"));

        let mut other = tempfile::tempfile().expect("tempfile");
        other.write_all(b"other\n").expect("write");
        assert!(!short.is_prefix_of(&other).expect("read"));
    }
}
