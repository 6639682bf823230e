//! Directories for tests, optionally on a small tmpfs (to fill the disk for real).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh directory, removed at the end (with the tmpfs mounted on it, if any).
pub struct TempDir {
    pub path: PathBuf,
    mounted: bool,
}

impl TempDir {
    pub fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("infinitic-faults-{name}-{}", std::process::id()));
        let _ = Command::new("umount")
            .arg(&path)
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Self {
            path,
            mounted: false,
        }
    }

    /// A directory on a tmpfs of `size` (say "3m"); `None` when this process cannot mount.
    pub fn small_filesystem(name: &str, size: &str) -> Option<Self> {
        let mut dir = Self::new(name);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir.path)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mounting a {size} tmpfs needs root (run the tests as root)");
            return None;
        }
        dir.mounted = true;
        Some(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.mounted {
            // Lazily: the store's threads may still be closing their files.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Writes a file until the filesystem is full, then gives `keep` bytes back; returns the
/// file's size.
pub fn fill(path: &Path, keep: u64) -> u64 {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0xAB; 16 * 1024];
    let mut written = 0u64;
    while let Ok(n @ 1..) = file.write(&chunk) {
        written += n as u64;
    }
    let size = written.saturating_sub(keep);
    file.set_len(size).unwrap();
    file.sync_all().unwrap();
    size
}
