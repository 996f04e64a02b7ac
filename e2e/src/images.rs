//! The image → local binary table (`e2e/pod-images.yaml`): how the pod runner turns a
//! container image reference into something it can execute without a container runtime.
//!
//! Owns parsing, matching (first rule wins, `*` wildcards) and resolving a rule to a path.
//! It does not spawn anything and never consults a registry. The file is re-read when it
//! changes, so a new rule takes effect for the next container start.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ImageTableError {
    #[error("reading the image table {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("parsing the image table {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("image table {path}, rule {index} ({pattern:?}): set exactly one of `binary` or `host: true`")]
    Rule { path: PathBuf, index: usize, pattern: String },
}

/// Why an image cannot be run. The messages end up in the container's waiting status, so
/// they name the image, the table file and what to do.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageError {
    #[error(
        "image {image:?} is not in the pod runner's image table {table}: add a rule mapping it to a local \
         binary, or use image millrace/host:latest to run command[0] from the runner's PATH"
    )]
    Unknown { image: String, table: String },
    #[error(
        "image {image:?} maps to {binary}, which does not exist: build it (`cargo build --bins`) or fix \
         the rule in {table}"
    )]
    MissingBinary { image: String, binary: String, table: String },
}

/// What a rule says to run for an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageTarget {
    /// A built binary: the image's entrypoint.
    Binary { path: PathBuf, name: String },
    /// No entrypoint: `command[0]` is looked up on the runner's PATH.
    Host,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    images: Vec<RawRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pattern: String,
    #[serde(default)]
    binary: Option<String>,
    #[serde(default)]
    host: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Rule {
    Binary { pattern: String, binary: String },
    Host { pattern: String },
}

impl Rule {
    fn pattern(&self) -> &str {
        match self {
            Rule::Binary { pattern, .. } | Rule::Host { pattern } => pattern,
        }
    }
}

/// The parsed table plus where binaries live.
#[derive(Debug)]
pub struct ImageTable {
    path: PathBuf,
    bin_dir: PathBuf,
    loaded: Mutex<(Option<SystemTime>, Vec<Rule>)>,
}

impl ImageTable {
    pub fn load(path: &Path, bin_dir: &Path) -> Result<Self, ImageTableError> {
        let (mtime, rules) = read_rules(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            bin_dir: bin_dir.to_path_buf(),
            loaded: Mutex::new((mtime, rules)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves `image` with the current table (re-read if the file changed; a broken edit
    /// keeps the previous rules and is logged).
    pub fn resolve(&self, image: &str) -> Result<ImageTarget, ImageError> {
        let rules = self.current_rules();
        let target = match_rules(&rules, image, &self.bin_dir).ok_or_else(|| ImageError::Unknown {
            image: image.to_string(),
            table: self.path.display().to_string(),
        })?;
        if let ImageTarget::Binary { path, .. } = &target
            && !path.is_file()
        {
            return Err(ImageError::MissingBinary {
                image: image.to_string(),
                binary: path.display().to_string(),
                table: self.path.display().to_string(),
            });
        }
        Ok(target)
    }

    fn current_rules(&self) -> Vec<Rule> {
        let mut loaded = match self.loaded.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mtime = std::fs::metadata(&self.path).and_then(|m| m.modified()).ok();
        if mtime.is_some() && mtime != loaded.0 {
            match read_rules(&self.path) {
                Ok(fresh) => *loaded = fresh,
                Err(err) => {
                    tracing::error!(%err, "keeping the previous image table");
                    loaded.0 = mtime;
                }
            }
        }
        loaded.1.clone()
    }
}

fn read_rules(path: &Path) -> Result<(Option<SystemTime>, Vec<Rule>), ImageTableError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ImageTableError::Read { path: path.into(), source })?;
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Ok((mtime, parse_rules(&text, path)?))
}

fn parse_rules(text: &str, path: &Path) -> Result<Vec<Rule>, ImageTableError> {
    let file: TableFile = serde_saphyr::from_str(text)
        .map_err(|err| ImageTableError::Parse { path: path.into(), message: err.to_string() })?;
    file.images
        .into_iter()
        .enumerate()
        .map(|(index, raw)| match (raw.binary, raw.host) {
            (Some(binary), false) if !binary.is_empty() => Ok(Rule::Binary { pattern: raw.pattern, binary }),
            (None, true) => Ok(Rule::Host { pattern: raw.pattern }),
            _ => Err(ImageTableError::Rule { path: path.into(), index, pattern: raw.pattern }),
        })
        .collect()
}

fn match_rules(rules: &[Rule], image: &str, bin_dir: &Path) -> Option<ImageTarget> {
    let reference = normalize_reference(image);
    let rule = rules.iter().find(|rule| glob_match(rule.pattern(), &reference))?;
    Some(match rule {
        Rule::Host { .. } => ImageTarget::Host,
        Rule::Binary { binary, .. } => {
            let path =
                if Path::new(binary).is_absolute() { PathBuf::from(binary) } else { bin_dir.join(binary) };
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            ImageTarget::Binary { path, name }
        }
    })
}

/// `name[:tag][@digest]` → `name:tag`, with the tag defaulting to `latest` as a registry
/// would; the digest plays no part in matching.
pub fn normalize_reference(image: &str) -> String {
    let without_digest = image.split_once('@').map_or(image, |(name, _)| name);
    let last_component = without_digest.rsplit('/').next().unwrap_or(without_digest);
    if last_component.contains(':') { without_digest.to_string() } else { format!("{without_digest}:latest") }
}

/// `*` matches any run of characters (including `/`), `?` exactly one; everything else is literal.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = r#"
images:
  - pattern: "*/millrace-worker:*"
    binary: millrace-worker
  - pattern: "millrace-worker:*"
    binary: millrace-worker
  - pattern: "millrace/host:*"
    host: true
  - pattern: "tools/absolute:*"
    binary: /opt/bin/tool
"#;

    fn rules() -> Vec<Rule> {
        parse_rules(TABLE, Path::new("pod-images.yaml")).expect("valid table")
    }

    fn resolve(image: &str) -> Option<ImageTarget> {
        match_rules(&rules(), image, Path::new("/bins"))
    }

    #[test]
    fn globs_match_like_shell_wildcards() {
        assert!(glob_match("*/millrace-worker:*", "ghcr.io/acme/millrace-worker:0.1"));
        assert!(!glob_match("*/millrace-worker:*", "ghcr.io/acme/notmillrace-worker:0.1"));
        assert!(!glob_match("*/millrace-worker:*", "millrace-worker:0.1"));
        assert!(glob_match("millrace-worker:*", "millrace-worker:latest"));
        assert!(glob_match("a?c", "abc"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("abc", "abcd"));
        assert!(glob_match("*a*b", "xxaxxbxab"));
    }

    #[test]
    fn references_get_a_default_tag_and_lose_their_digest() {
        assert_eq!(normalize_reference("millrace-worker"), "millrace-worker:latest");
        assert_eq!(
            normalize_reference("localhost:5000/millrace-worker"),
            "localhost:5000/millrace-worker:latest"
        );
        assert_eq!(normalize_reference("repo/x:1.2@sha256:abcd"), "repo/x:1.2");
        assert_eq!(normalize_reference("repo/x@sha256:abcd"), "repo/x:latest");
    }

    #[test]
    fn first_matching_rule_wins() {
        assert_eq!(
            resolve("registry.example/millrace/millrace-worker:0.3"),
            Some(ImageTarget::Binary {
                path: "/bins/millrace-worker".into(),
                name: "millrace-worker".into()
            })
        );
        assert_eq!(
            resolve("millrace-worker"),
            Some(ImageTarget::Binary {
                path: "/bins/millrace-worker".into(),
                name: "millrace-worker".into()
            })
        );
        assert_eq!(resolve("millrace/host:latest"), Some(ImageTarget::Host));
        assert_eq!(
            resolve("tools/absolute:1"),
            Some(ImageTarget::Binary { path: "/opt/bin/tool".into(), name: "tool".into() })
        );
        assert_eq!(resolve("docker.io/library/nginx:1.27"), None);
    }

    #[test]
    fn a_rule_needs_exactly_one_target() {
        let both = "images:\n  - pattern: x\n    binary: y\n    host: true\n";
        assert!(matches!(
            parse_rules(both, Path::new("t.yaml")),
            Err(ImageTableError::Rule { index: 0, .. })
        ));
        let neither = "images:\n  - pattern: x\n";
        assert!(matches!(parse_rules(neither, Path::new("t.yaml")), Err(ImageTableError::Rule { .. })));
        let typo = "images:\n  - pattern: x\n    binray: y\n";
        assert!(matches!(parse_rules(typo, Path::new("t.yaml")), Err(ImageTableError::Parse { .. })));
    }

    #[test]
    fn unknown_and_missing_images_explain_themselves() {
        let dir = tempfile::tempdir().expect("temp dir");
        let table_path = dir.path().join("pod-images.yaml");
        std::fs::write(&table_path, TABLE).expect("write table");
        let table = ImageTable::load(&table_path, dir.path()).expect("table loads");
        let unknown = table.resolve("registry.invalid/nope:1").expect_err("unknown image");
        assert!(unknown.to_string().contains("registry.invalid/nope:1"));
        assert!(unknown.to_string().contains("pod-images.yaml"));
        let missing = table.resolve("millrace-worker:1").expect_err("binary not built");
        assert!(matches!(missing, ImageError::MissingBinary { .. }));
        std::fs::write(dir.path().join("millrace-worker"), "").expect("fake binary");
        assert!(matches!(table.resolve("millrace-worker:1"), Ok(ImageTarget::Binary { .. })));
    }
}
