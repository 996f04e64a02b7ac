//! Small file helpers shared by the modules that write into Pod folders: atomic writes that
//! skip unchanged content, so readers never see half a file and refreshes cost nothing.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `content` to `path` through a temporary file and a rename, unless the file
/// already holds exactly that content with that mode. Returns whether it wrote.
pub fn write_if_changed(path: &Path, content: &[u8], mode: u32) -> io::Result<bool> {
    if let Ok(existing) = std::fs::read(path)
        && existing == content
        && std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o7777 == mode)
    {
        return Ok(false);
    }
    let parent =
        path.parent().ok_or_else(|| io::Error::other(format!("{} has no parent", path.display())))?;
    std::fs::create_dir_all(parent)?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let unique = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = parent.join(format!(".{file_name}.tmp-{}-{unique}", std::process::id()));
    std::fs::write(&tmp, content)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Removes a file or directory tree if it exists.
pub fn remove_path(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a/b/file");
        assert!(write_if_changed(&path, b"one", 0o600).expect("write"));
        assert!(!write_if_changed(&path, b"one", 0o600).expect("no-op"));
        assert!(write_if_changed(&path, b"one", 0o644).expect("mode change"));
        assert!(write_if_changed(&path, b"two", 0o644).expect("content change"));
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        remove_path(&dir.path().join("a")).expect("remove");
        assert!(!path.exists());
        remove_path(&dir.path().join("a")).expect("removing twice is fine");
    }
}
