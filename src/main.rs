#[tokio::main]
async fn main() -> std::process::ExitCode {
    // First of all, before parsing or connecting: from here on SIGTERM and SIGINT are
    // stop requests, so a signal at any instant of a role's start ends it cleanly.
    let signals = recur::runtime::Signals::install();
    recur::cli::main(signals).await
}
