fn main() -> std::process::ExitCode {
    marunochi::cli::main()
}
