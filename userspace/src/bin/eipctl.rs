fn main() -> std::process::ExitCode {
    eipgw::cli::main()
}
