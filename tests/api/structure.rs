//! The codebase's one-home rules (docs/architecture.md#code-map), checked on the
//! source: cycle and transaction statuses are written only by their state machines
//! (and the lease only by its module), and no comment cites a file outside the
//! repository.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = Vec::new();
    for dir in ["src", "jobs/src", "bench/src"] {
        sources(&root.join(dir), &mut paths);
    }
    paths
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn cycle_and_transaction_statuses_change_only_in_their_state_machines() {
    let allowed = ["src/billing/cycle_state.rs", "src/billing/transaction_state.rs", "src/lease.rs"];
    let mut offenders = Vec::new();
    for (path, text) in files() {
        for table in ["UPDATE billing_cycles", "UPDATE transactions"] {
            if text.contains(table) && !allowed.contains(&path.as_str()) {
                offenders.push(format!("{path}: {table}"));
            }
        }
    }
    assert!(offenders.is_empty(), "status writes outside the state machines: {offenders:?}");
}

#[test]
fn only_the_lease_module_claims_or_extends_leases() {
    // Setting a lease (`enqueued_until = now() + …`) outside lease.rs is allowed only
    // where a row is created or reopened for the job its writer enqueues.
    let allowed = ["src/lease.rs", "src/billing/transaction_state.rs", "src/series.rs"];
    let offenders: Vec<String> = files()
        .into_iter()
        .filter(|(path, text)| text.contains("enqueued_until = now()") && !allowed.contains(&path.as_str()))
        .map(|(path, _)| path)
        .collect();
    assert!(offenders.is_empty(), "leases stamped outside src/lease.rs: {offenders:?}");
}

#[test]
fn comments_cite_the_docs_not_files_outside_the_repository() {
    let offenders: Vec<String> = files()
        .into_iter()
        .filter(|(_, text)| text.contains("SPEC") || text.contains("APALIS_REDIS") || text.contains("../shared"))
        .map(|(path, _)| path)
        .collect();
    assert!(offenders.is_empty(), "citations outside the repository: {offenders:?}");
}
