#[tokio::main]
async fn main() -> std::process::ExitCode {
    recur::cli::main().await
}
