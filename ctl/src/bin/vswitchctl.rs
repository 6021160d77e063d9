//! vswitchctl: the command line for vswitchd (tables for people, `--format json` for programs).

fn main() {
    std::process::exit(vswitch_ctl::cli::main());
}
