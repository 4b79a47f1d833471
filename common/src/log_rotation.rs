//! etcd's log rotation (`--enable-log-rotation`, `--log-rotation-config-json`,
//! lumberjack's rules): a log file that would pass `maxsize` MiB is renamed
//! to `<name>-<UTC time><ext>` and a fresh one started; backups beyond
//! `maxbackups` or older than `maxage` days are removed, and gzipped when
//! `compress`. A member's three daemons may share the file: a rotation
//! happens under a lock on the old file, and a daemon that finds the path
//! naming another file than its own reopens it instead of rotating again.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::config::ConfigError;

/// etcd's default `--log-rotation-config-json`.
pub const DEFAULT_CONFIG: &str =
    r#"{"maxsize": 100, "maxage": 0, "maxbackups": 0, "localtime": false, "compress": false}"#;

/// lumberjack's settings (its JSON keys, as etcd takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Rotate before a write would take the file past this.
    pub max_bytes: u64,
    /// Remove backups older than this (None: keep them however old).
    pub max_age: Option<Duration>,
    /// Keep at most this many backups (0: all).
    pub max_backups: usize,
    /// Name backups in local time instead of UTC.
    pub local_time: bool,
    /// Gzip backups.
    pub compress: bool,
}

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct Json {
    maxsize: i64,
    maxage: i64,
    maxbackups: i64,
    localtime: bool,
    compress: bool,
}

const MIB: u64 = 1024 * 1024;

impl Rotation {
    /// Parse etcd's JSON; errors in etcd's words.
    pub fn parse(json: &str) -> Result<Rotation, ConfigError> {
        let parsed: Json = serde_json::from_str(json).map_err(|e| {
            ConfigError(if e.is_syntax() || e.is_eof() {
                format!("improperly formatted log rotation config: {e}")
            } else {
                format!("invalid log rotation config: {e}")
            })
        })?;
        let size = match parsed.maxsize {
            n if n <= 0 => 100,
            n => n as u64,
        };
        Ok(Rotation {
            max_bytes: size.saturating_mul(MIB),
            max_age: (parsed.maxage > 0)
                .then(|| Duration::from_secs(parsed.maxage as u64 * 24 * 3600)),
            max_backups: usize::try_from(parsed.maxbackups.max(0)).unwrap_or(usize::MAX),
            local_time: parsed.localtime,
            compress: parsed.compress,
        })
    }

    /// lumberjack's backup name for `path` rotated at `at`:
    /// `<stem>-2006-01-02T15-04-05.000<ext>`.
    fn backup_name(&self, path: &Path, at: SystemTime) -> PathBuf {
        let (stem, ext) = split_name(path);
        let at = chrono::DateTime::<chrono::Utc>::from(at);
        let stamp = if self.local_time {
            at.with_timezone(&chrono::Local).format(STAMP).to_string()
        } else {
            at.format(STAMP).to_string()
        };
        path.with_file_name(format!("{stem}-{stamp}{ext}"))
    }
}

const STAMP: &str = "%Y-%m-%dT%H-%M-%S%.3f";

/// A file name's stem and extension as Go's filepath.Ext splits them.
fn split_name(path: &Path) -> (String, String) {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rfind('.') {
        Some(i) => (name[..i].to_string(), name[i..].to_string()),
        None => (name, String::new()),
    }
}

/// The backups of `path` with the time in their name, oldest first.
fn backups(path: &Path, local_time: bool) -> Vec<(SystemTime, PathBuf)> {
    let (stem, ext) = split_name(path);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let prefix = format!("{stem}-");
    let mut found: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            let stamp = rest
                .strip_suffix(&format!("{ext}.gz"))
                .or_else(|| rest.strip_suffix(ext.as_str()))?;
            let naive = chrono::NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
            let at: SystemTime = if local_time {
                naive
                    .and_local_timezone(chrono::Local)
                    .earliest()?
                    .with_timezone(&chrono::Utc)
                    .into()
            } else {
                naive.and_utc().into()
            };
            Some((at, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// Remove the backups the settings no longer keep; gzip the rest when
/// asked.
fn prune(path: &Path, rotation: &Rotation) {
    let mut kept = backups(path, rotation.local_time);
    if rotation.max_backups > 0 && kept.len() > rotation.max_backups {
        let excess = kept.len() - rotation.max_backups;
        for (_, old) in kept.drain(..excess) {
            let _ = std::fs::remove_file(old);
        }
    }
    if let Some(age) = rotation.max_age {
        let cutoff = SystemTime::now()
            .checked_sub(age)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        kept.retain(|(at, old)| {
            let keep = *at >= cutoff;
            if !keep {
                let _ = std::fs::remove_file(old);
            }
            keep
        });
    }
    if rotation.compress {
        for (_, old) in kept {
            if old.extension().is_some_and(|e| e == "gz") {
                continue;
            }
            let _ = gzip(&old);
        }
    }
}

/// `old` as `old.gz` (written beside, then the original removed).
fn gzip(old: &Path) -> std::io::Result<()> {
    let mut gz_name = old.as_os_str().to_owned();
    gz_name.push(".gz");
    let gz_path = PathBuf::from(gz_name);
    let mut input = File::open(old)?;
    let output = open_private(&gz_path, true)?;
    let mut encoder = flate2::write::GzEncoder::new(output, flate2::Compression::default());
    std::io::copy(&mut input, &mut encoder)?;
    encoder.finish()?.sync_all()?;
    std::fs::remove_file(old)
}

fn open_private(path: &Path, truncate: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = OpenOptions::new();
    o.create(true).mode(0o600);
    if truncate {
        o.write(true).truncate(true);
    } else {
        o.append(true);
    }
    o.open(path)
}

/// A log file lumberjack-style rotation keeps bounded.
pub struct RotatingFile {
    path: PathBuf,
    rotation: Rotation,
    file: Mutex<File>,
}

impl RotatingFile {
    pub fn open(path: &Path, rotation: Rotation) -> std::io::Result<RotatingFile> {
        let file = open_private(path, false)?;
        Ok(RotatingFile {
            path: path.to_path_buf(),
            rotation,
            file: Mutex::new(file),
        })
    }

    /// Append `line`, rotating first when it would not fit.
    pub fn write(&self, line: &[u8]) -> std::io::Result<()> {
        let len = line.len() as u64;
        if len > self.rotation.max_bytes {
            return Err(std::io::Error::other(format!(
                "write length {len} exceeds maximum file size {}",
                self.rotation.max_bytes
            )));
        }
        let mut file = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("log file lock poisoned"))?;
        // Reopen the path when a sibling daemon rotated it away.
        let (ours, mut size) = self.names(&file)?;
        if !ours {
            *file = open_private(&self.path, false)?;
            size = file.metadata()?.len();
        }
        if size + len > self.rotation.max_bytes {
            self.rotate(&mut file)?;
        }
        file.write_all(line)
    }

    /// Whether the path still names `file`, and `file`'s length.
    fn names(&self, file: &File) -> std::io::Result<(bool, u64)> {
        let ours = file.metadata()?;
        let same = std::fs::metadata(&self.path)
            .is_ok_and(|now| now.ino() == ours.ino() && now.dev() == ours.dev());
        Ok((same, ours.len()))
    }

    fn rotate(&self, file: &mut File) -> std::io::Result<()> {
        file.lock()?;
        // Under the lock, a sibling may have rotated first.
        let (still_ours, _) = self.names(file)?;
        let renamed = if still_ours {
            let backup = self.rotation.backup_name(&self.path, SystemTime::now());
            std::fs::rename(&self.path, backup).map(|()| true)
        } else {
            Ok(false)
        };
        let _ = file.unlock();
        let renamed = renamed?;
        *file = open_private(&self.path, false)?;
        if renamed {
            let (path, rotation) = (self.path.clone(), self.rotation.clone());
            // Pruning and compressing may take a while: off the logging path.
            std::thread::spawn(move || prune(&path, &rotation));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_config_and_its_errors() {
        let d = Rotation::parse(DEFAULT_CONFIG).unwrap();
        assert_eq!(d.max_bytes, 100 * MIB);
        assert_eq!((d.max_age, d.max_backups, d.compress), (None, 0, false));
        let r = Rotation::parse(r#"{"maxsize": 1, "maxage": 2, "maxbackups": 3}"#).unwrap();
        assert_eq!(r.max_bytes, MIB);
        assert_eq!(r.max_age, Some(Duration::from_secs(2 * 24 * 3600)));
        assert_eq!(r.max_backups, 3);
        let bad = Rotation::parse(r#"{"maxsize": 1"#).unwrap_err().0;
        assert!(
            bad.starts_with("improperly formatted log rotation config: "),
            "{bad}"
        );
        let wrong = Rotation::parse(r#"{"maxsize": "1"}"#).unwrap_err().0;
        assert!(
            wrong.starts_with("invalid log rotation config: "),
            "{wrong}"
        );
    }

    #[test]
    fn backups_are_named_and_found_as_lumberjack_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.log");
        let r = Rotation::parse(DEFAULT_CONFIG).unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_478_284_200_005);
        let name = r.backup_name(&path, at);
        assert_eq!(
            name.file_name().unwrap().to_string_lossy(),
            "member-2016-11-04T18-30-00.005.log"
        );
        std::fs::write(&name, "x").unwrap();
        std::fs::write(dir.path().join("member-not-a-time.log"), "x").unwrap();
        assert_eq!(backups(&path, false), vec![(at, name)]);
    }

    #[test]
    fn a_full_file_rotates_and_old_backups_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.log");
        let rotation = Rotation {
            max_bytes: 100,
            max_age: None,
            max_backups: 2,
            local_time: false,
            compress: false,
        };
        let a = RotatingFile::open(&path, rotation.clone()).unwrap();
        let b = RotatingFile::open(&path, rotation).unwrap();
        let line = [b'x'; 30];
        for i in 0..20 {
            let f = if i % 2 == 0 { &a } else { &b };
            f.write(&line).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(a.write(&[b'y'; 101]).is_err());
        assert!(std::fs::metadata(&path).unwrap().len() <= 100);
        // Every line is somewhere: in the file or a backup (until pruned).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while backups(&path, false).len() > 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let kept = backups(&path, false);
        assert_eq!(kept.len(), 2, "{kept:?}");
        for (_, b) in kept {
            assert!(std::fs::metadata(&b).unwrap().len() <= 100);
        }
    }
}
