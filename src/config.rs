//! Choosing an executor from configuration: [`ExecutorConfig`].
//!
//! A service reads `"thread"`, `"thread:8"`, `"process"` or `"process:4"`
//! from its config file, command line or the [`EXECUTOR_ENV`] variable and
//! gets an `Arc<dyn Executor>`; every call site stays the same for both.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Error, Executor, ThreadPoolExecutor};

/// The environment variable [`ExecutorConfig::from_env_or`] reads.
pub const EXECUTOR_ENV: &str = "CF_EXECUTOR";

/// The most workers a pool may have: far above any machine's useful
/// parallelism, and low enough that a mistyped count (`usize::MAX` from a
/// config file) is an [`Error::InvalidConfig`] rather than an allocation
/// that panics or aborts the process.
///
/// Thread workers set the bound. Each thread costs the process about four
/// memory mappings (its stack, the stack's guard page, the signal stack
/// and its guard), and Linux's stock limit is 65 530 mappings a process
/// (`vm.max_map_count`): at about 18 000 threads, a new thread's start-up
/// fails inside the standard library, where it cannot unwind, and the
/// process aborts. 4096 leaves room for several such pools and the rest
/// of the program.
pub const MAX_WORKERS: usize = 1 << 12;

/// Checks a requested worker count: at least 1, at most [`MAX_WORKERS`].
pub(crate) fn check_worker_count(n: usize) -> Result<usize, Error> {
    match n {
        0 => Err(Error::InvalidConfig(
            "max_workers must be greater than 0".into(),
        )),
        n if n > MAX_WORKERS => Err(Error::InvalidConfig(format!(
            "max_workers is {n}, more than the {MAX_WORKERS} a pool may have"
        ))),
        n => Ok(n),
    }
}

/// Which kind of pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutorKind {
    /// A [`ThreadPoolExecutor`].
    Thread,
    /// A [`ProcessPoolExecutor`](crate::ProcessPoolExecutor) (Unix).
    Process,
}

/// An executor description: a kind and an optional worker count.
///
/// Parses from `"thread"`, `"thread:8"`, `"process"`, `"process:4"`, and
/// deserializes from that string or from `{ kind = "process", workers = 4 }`.
/// The table form is read from human-readable formats (TOML, JSON, YAML);
/// formats that are not (postcard, bincode, CBOR, MessagePack) read the
/// string form, which is also what it always serializes as.
///
/// ```
/// use concurrent_futures::{ExecutorConfig, ExecutorExt, ExecutorKind};
///
/// fn double(x: u32) -> u32 { x * 2 }
///
/// let config: ExecutorConfig = "thread:2".parse().unwrap();
/// assert_eq!(config.kind, ExecutorKind::Thread);
/// assert_eq!(config.workers, Some(2));
/// let ex = config.build().unwrap();
/// assert_eq!(ex.submit(double, 21).into_result(), Ok(42));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct ExecutorConfig {
    /// Threads or processes.
    pub kind: ExecutorKind,
    /// Worker count; `None`: the number of CPUs.
    pub workers: Option<usize>,
}

/// The two forms a human-readable format may give.
enum ConfigRepr {
    Text(String),
    Table(ConfigTable),
}

/// Tells the two forms apart by what the format holds, so that a table's
/// error is the table's own (``unknown field `max_workers` ``, ``missing
/// field `kind` ``) rather than serde's "did not match any variant" of an
/// untagged enum, which names neither key nor value (found by review).
struct ConfigReprVisitor;

impl<'de> serde::de::Visitor<'de> for ConfigReprVisitor {
    type Value = ConfigRepr;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an executor as a string (\"thread:4\") or a table with `kind` and `workers`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigRepr, E> {
        Ok(ConfigRepr::Text(v.to_owned()))
    }

    fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<ConfigRepr, M::Error> {
        ConfigTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            .map(ConfigRepr::Table)
    }
}

/// The table form. A misspelt key (`max_workers = 4`) is an error, not a
/// worker count silently dropped.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigTable {
    /// Read as the string form reads it (`"Thread"`, `"processes"`...).
    kind: String,
    #[serde(default)]
    workers: Option<usize>,
}

impl TryFrom<ConfigRepr> for ExecutorConfig {
    type Error = Error;
    fn try_from(r: ConfigRepr) -> Result<Self, Error> {
        match r {
            ConfigRepr::Text(s) => s.parse(),
            // One set of rules for both forms: the table is checked as the
            // string it saves back as.
            ConfigRepr::Table(ConfigTable { kind, .. }) if kind.contains(':') => {
                Err(Error::InvalidConfig(format!(
                    "executor kind {kind:?}: expected \"thread\" or \"process\" (the worker count goes in `workers`)"
                )))
            }
            ConfigRepr::Table(ConfigTable { kind, workers }) => match workers {
                Some(n) => format!("{kind}:{n}").parse(),
                None => kind.parse(),
            },
        }
    }
}

/// The string it serializes as, from a format that does not describe its
/// own data (postcard, the process pool's wire format; bincode), which
/// cannot read the untagged choice of string or table; a human-readable
/// format (TOML, JSON) may give either. (Through `try_from = "ConfigRepr"`
/// alone, a config passed to or returned from a process-pool task failed
/// to decode; found by review.)
impl<'de> Deserialize<'de> for ExecutorConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = if d.is_human_readable() {
            d.deserialize_any(ConfigReprVisitor)?
        } else {
            ConfigRepr::Text(String::deserialize(d)?)
        };
        repr.try_into().map_err(serde::de::Error::custom)
    }
}

impl From<ExecutorConfig> for String {
    fn from(c: ExecutorConfig) -> String {
        c.to_string()
    }
}

impl fmt::Display for ExecutorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ExecutorKind::Thread => "thread",
            ExecutorKind::Process => "process",
        };
        match self.workers {
            Some(n) => write!(f, "{kind}:{n}"),
            None => f.write_str(kind),
        }
    }
}

impl FromStr for ExecutorConfig {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || {
            Error::InvalidConfig(format!(
                "executor {s:?}: expected \"thread\", \"thread:N\", \"process\" or \"process:N\" with N >= 1"
            ))
        };
        let count = |n: &str| match n.trim().parse::<usize>() {
            Ok(n) => Ok(n),
            // Digits past `usize`: too many, not too few or not a number
            // (found by review: it read "with N >= 1").
            Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
                Err(Error::InvalidConfig(format!(
                    "executor {s:?}: the worker count is more than the {MAX_WORKERS} a pool may have"
                )))
            }
            Err(_) => Err(bad()),
        };
        let (kind, workers) = match s.trim().split_once(':') {
            Some((k, n)) => (k, Some(count(n)?)),
            None => (s.trim(), None),
        };
        let kind = match kind.trim().to_ascii_lowercase().as_str() {
            "thread" | "threads" => ExecutorKind::Thread,
            "process" | "processes" => ExecutorKind::Process,
            _ => return Err(bad()),
        };
        if workers == Some(0) {
            return Err(bad());
        }
        Ok(ExecutorConfig { kind, workers })
    }
}

impl ExecutorConfig {
    /// Reads [`EXECUTOR_ENV`] (`CF_EXECUTOR`), or parses `default` when it
    /// is unset or empty. A set but invalid value is an error, not a
    /// silent fallback.
    pub fn from_env_or(default: &str) -> Result<Self, Error> {
        match std::env::var(EXECUTOR_ENV) {
            // Named in the error, which the default's would otherwise
            // share word for word (found by review).
            Ok(v) if !v.trim().is_empty() => v.parse().map_err(|e| match e {
                Error::InvalidConfig(m) => Error::InvalidConfig(format!("{EXECUTOR_ENV}: {m}")),
                e => e,
            }),
            Err(std::env::VarError::NotUnicode(v)) => Err(Error::InvalidConfig(format!(
                "{EXECUTOR_ENV}={v:?} is not valid UTF-8; expected \"thread[:N]\" or \"process[:N]\""
            ))),
            _ => default.parse(),
        }
    }

    /// Builds the executor. A process pool needs
    /// [`init()`](crate::init) at the top of `main`.
    pub fn build(&self) -> Result<Arc<dyn Executor>, Error> {
        #[cfg(unix)]
        return self.build_with(|b| b);
        #[cfg(not(unix))]
        return self.build_with();
    }

    /// Builds the executor, letting `customize` adjust a process pool's
    /// builder first (for example
    /// [`test_harness()`](crate::ProcessPoolBuilder::test_harness) inside
    /// `cargo test`, or a task timeout). Thread pools ignore it.
    #[cfg(unix)]
    pub fn build_with(
        &self,
        customize: impl FnOnce(crate::ProcessPoolBuilder) -> crate::ProcessPoolBuilder,
    ) -> Result<Arc<dyn Executor>, Error> {
        match self.kind {
            ExecutorKind::Thread => {
                let mut b = ThreadPoolExecutor::builder();
                if let Some(n) = self.workers {
                    b = b.max_workers(n);
                }
                Ok(Arc::new(b.build()?))
            }
            #[cfg(unix)]
            ExecutorKind::Process => {
                let mut b = crate::ProcessPoolExecutor::builder();
                if let Some(n) = self.workers {
                    b = b.max_workers(n);
                }
                Ok(Arc::new(customize(b).build()?))
            }
        }
    }

    #[cfg(not(unix))]
    fn build_with(&self) -> Result<Arc<dyn Executor>, Error> {
        match self.kind {
            ExecutorKind::Thread => Ok(Arc::new(match self.workers {
                Some(n) => ThreadPoolExecutor::new(n)?,
                None => ThreadPoolExecutor::builder().build()?,
            })),
            ExecutorKind::Process => Err(Error::InvalidConfig(
                "process pools are only available on Unix".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_form() {
        let t = |s: &str| s.parse::<ExecutorConfig>().unwrap();
        assert_eq!(
            t("thread"),
            ExecutorConfig {
                kind: ExecutorKind::Thread,
                workers: None
            }
        );
        assert_eq!(
            t("thread:8"),
            ExecutorConfig {
                kind: ExecutorKind::Thread,
                workers: Some(8)
            }
        );
        assert_eq!(
            t("process"),
            ExecutorConfig {
                kind: ExecutorKind::Process,
                workers: None
            }
        );
        assert_eq!(
            t(" Process:4 "),
            ExecutorConfig {
                kind: ExecutorKind::Process,
                workers: Some(4)
            }
        );
    }

    #[test]
    fn rejects_unknown_kinds_and_zero_or_bad_counts() {
        for bad in [
            "",
            "fiber",
            "thread:0",
            "process:-1",
            "process:x",
            "thread:",
        ] {
            assert!(
                matches!(bad.parse::<ExecutorConfig>(), Err(Error::InvalidConfig(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["thread", "thread:3", "process", "process:4"] {
            assert_eq!(s.parse::<ExecutorConfig>().unwrap().to_string(), s);
        }
    }

    #[test]
    fn deserializes_from_a_string_or_a_table() {
        let c: ExecutorConfig = serde_json::from_str("\"process:4\"").unwrap();
        assert_eq!(
            c,
            ExecutorConfig {
                kind: ExecutorKind::Process,
                workers: Some(4)
            }
        );
        let c: ExecutorConfig =
            serde_json::from_str(r#"{"kind": "thread", "workers": 2}"#).unwrap();
        assert_eq!(
            c,
            ExecutorConfig {
                kind: ExecutorKind::Thread,
                workers: Some(2)
            }
        );
        let c: ExecutorConfig = serde_json::from_str(r#"{"kind": "process"}"#).unwrap();
        assert_eq!(c.workers, None);
        assert!(serde_json::from_str::<ExecutorConfig>("\"fiber\"").is_err());
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"process\"");
    }

    fn from_table(json: &str) -> Result<ExecutorConfig, String> {
        serde_json::from_str::<ExecutorConfig>(json).map_err(|e| e.to_string())
    }

    /// Found by review: a misspelt key (`max_workers`) was dropped without
    /// a word, and the pool got one worker per CPU. The error names it.
    #[test]
    fn a_table_with_an_unknown_key_is_refused_by_name() {
        for (json, key) in [
            (r#"{"kind": "process", "max_workers": 4}"#, "max_workers"),
            (r#"{"kind": "thread", "threads": 4}"#, "threads"),
        ] {
            let e = from_table(json).expect_err(json);
            assert!(e.contains(key), "{json}: {e}");
        }
    }

    /// Found by review: every bad table read "data did not match any
    /// variant of untagged enum ConfigRepr", naming neither key nor value.
    #[test]
    fn a_bad_table_error_names_the_key_or_the_value() {
        for (json, any_of) in [
            (r#"{"workers": 4}"#, &["kind"][..]),
            (
                r#"{"kind": "thread", "workers": -1}"#,
                &["workers", "-1"][..],
            ),
            (
                r#"{"kind": "thread", "workers": "4"}"#,
                &["workers", "string"][..],
            ),
            (r#"{"kind": "fiber"}"#, &["fiber"][..]),
            ("7", &["string", "table"][..]),
        ] {
            let e = from_table(json).expect_err(json);
            assert!(any_of.iter().any(|w| e.contains(w)), "{json}: {e}");
        }
    }

    /// Found by review: a count past `usize` was refused as if it were
    /// below one.
    #[test]
    fn a_count_past_usize_is_refused_as_too_many() {
        let e = "thread:99999999999999999999"
            .parse::<ExecutorConfig>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than the 4096"), "{e}");
    }

    /// Found by review: the table took `workers = 0`, which `build` then
    /// refused and which saved back as a string that no longer parsed.
    #[test]
    fn a_table_follows_the_string_forms_rules() {
        assert!(from_table(r#"{"kind": "thread", "workers": 0}"#).is_err());
        assert!(from_table(r#"{"kind": "thread:3"}"#).is_err());
        for (json, kind) in [
            (r#"{"kind": "Thread"}"#, ExecutorKind::Thread),
            (r#"{"kind": "threads", "workers": 3}"#, ExecutorKind::Thread),
            (r#"{"kind": "PROCESS"}"#, ExecutorKind::Process),
        ] {
            let c = from_table(json).unwrap();
            assert_eq!(c.kind, kind, "{json}");
            let saved = serde_json::to_string(&c).unwrap();
            assert_eq!(
                serde_json::from_str::<ExecutorConfig>(&saved).unwrap(),
                c,
                "{saved}"
            );
        }
    }
}
