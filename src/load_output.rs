//! Where `percore load` writes its files. Every path is checked before the run without
//! touching what is there, and the interval log is opened only once the run is under way, so
//! a run refused by its options, by its target or by a signal during its probe leaves the
//! files of an earlier run as they were.
//!
//! A log whose path is missing or a regular file is written beside it (`PATH.partial`) and
//! renamed over it when the run is over; a device, a pipe or a symbolic link is written in
//! place (renaming over one would replace it with a plain file).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Fails unless `path` can be written, leaving what it holds alone: a directory (or a link to
/// one) is refused, a regular file is opened for appending (nothing is written), a missing one
/// is created and removed again; anything else (a device, a pipe, a link) is left to the write
/// after the run (opening a pipe now would wait for its reader).
pub(crate) fn check_writable(path: &Path) -> anyhow::Result<()> {
    let cannot = || format!("cannot write {}", path.display());
    if path.metadata().is_ok_and(|meta| meta.is_dir()) {
        anyhow::bail!(
            "cannot write {}: it is a directory, expected a file name",
            path.display()
        );
    }
    match path.symlink_metadata() {
        Ok(meta) if meta.is_file() => {
            OpenOptions::new()
                .append(true)
                .open(path)
                .with_context(cannot)?;
        }
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match OpenOptions::new().write(true).create_new(true).open(path) {
                Ok(_) => {
                    let _ = std::fs::remove_file(path);
                }
                // Made meanwhile by someone else: theirs, not ours to remove.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e).with_context(cannot),
            }
        }
        Err(e) => return Err(e).with_context(cannot),
    }
    Ok(())
}

/// The interval log's file, created at its first write.
pub(crate) struct LogFile {
    path: PathBuf,
    /// `PATH.partial` when the log is renamed over `path` at the end; `None` in place.
    partial: Option<PathBuf>,
    file: Option<BufWriter<File>>,
}

impl LogFile {
    /// The log for `path`; nothing is opened yet.
    pub(crate) fn new(path: &Path) -> LogFile {
        let replaceable = match path.symlink_metadata() {
            Ok(meta) => meta.is_file(),
            Err(_) => true,
        };
        let partial = replaceable.then(|| {
            let mut name = path.as_os_str().to_owned();
            name.push(".partial");
            PathBuf::from(name)
        });
        LogFile {
            path: path.to_owned(),
            partial,
            file: None,
        }
    }

    fn open(&mut self) -> io::Result<&mut BufWriter<File>> {
        if self.file.is_none() {
            let target = self.partial.as_ref().unwrap_or(&self.path);
            self.file = Some(BufWriter::new(File::create(target)?));
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// The run is over: flushes the log and moves it into place.
    ///
    /// # Errors
    ///
    /// What failed, in words (the log is then wherever it was written).
    pub(crate) fn finish(mut self) -> Result<(), String> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.flush()
            .map_err(|e| format!("writing the interval log: {e}"))?;
        if let Some(partial) = self.partial.take() {
            std::fs::rename(&partial, &self.path).map_err(|e| {
                format!(
                    "moving the interval log {} to {}: {e} (the log is whole, in {})",
                    partial.display(),
                    self.path.display(),
                    partial.display()
                )
            })?;
        }
        Ok(())
    }

    /// The run failed: a log begun beside the path is removed (one written in place stays).
    pub(crate) fn abandon(mut self) {
        if self.file.take().is_some() {
            if let Some(partial) = &self.partial {
                let _ = std::fs::remove_file(partial);
            }
        }
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.open()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_writable;

    #[test]
    fn a_directory_is_refused_before_the_run() {
        let dir = std::env::temp_dir();
        let err = check_writable(&dir).unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
    }

    #[test]
    fn a_missing_file_in_a_missing_directory_is_refused_and_nothing_is_left() {
        let path = std::env::temp_dir().join("percore-no-such-dir/report.json");
        assert!(check_writable(&path).is_err());
        assert!(!path.exists());
    }
}
