//! The log subscriber. `RECUR_LOG` filters (EnvFilter syntax); `RECUR_LOG_FORMAT`
//! picks `text` or `json` (one object per line, with the fields of the enclosing
//! request or job span). Logs go to stderr: stdout carries command output (JSON,
//! tables) that scripts parse.

use std::io::IsTerminal;

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

const DEFAULT_FILTER: &str = "info,sqlx=warn,apalis=warn,apalis_core=warn,apalis_redis=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    /// The format named by `RECUR_LOG_FORMAT` (`value`), else text for a person at a
    /// terminal and JSON for a log collector. An unknown name gives the default and
    /// is returned, to be reported once logging works.
    pub fn choose(value: Option<&str>, stderr_is_terminal: bool) -> (LogFormat, Option<String>) {
        let default = if stderr_is_terminal { LogFormat::Text } else { LogFormat::Json };
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") => (default, None),
            Some("text") => (LogFormat::Text, None),
            Some("json") => (LogFormat::Json, None),
            Some(_) => (default, value.map(str::to_owned)),
        }
    }
}

/// Install the global subscriber (a no-op when one is already installed: tests start
/// many apps in one process).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RECUR_LOG").unwrap_or_else(|_| DEFAULT_FILTER.into());
    let terminal = std::io::stderr().is_terminal();
    let (format, unknown) = LogFormat::choose(std::env::var("RECUR_LOG_FORMAT").ok().as_deref(), terminal);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let output = match format {
        LogFormat::Text => fmt.with_target(false).with_ansi(terminal).boxed(),
        LogFormat::Json => fmt.json().with_current_span(true).with_span_list(true).boxed(),
    };
    if tracing_subscriber::registry().with(filter).with(output).try_init().is_ok()
        && let Some(v) = unknown
    {
        tracing::warn!(value = %v, using = ?format, "RECUR_LOG_FORMAT is neither text nor json");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_is_named_or_follows_the_terminal() {
        assert_eq!(LogFormat::choose(None, true), (LogFormat::Text, None));
        assert_eq!(LogFormat::choose(None, false), (LogFormat::Json, None));
        assert_eq!(LogFormat::choose(Some(" JSON "), true), (LogFormat::Json, None));
        assert_eq!(LogFormat::choose(Some("text"), false), (LogFormat::Text, None));
        assert_eq!(LogFormat::choose(Some("yaml"), false), (LogFormat::Json, Some("yaml".into())));
    }
}
