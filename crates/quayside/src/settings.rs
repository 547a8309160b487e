//! Where a setting came from, and what the flag parser's refusals say: a value clap rejects is a
//! configuration error like any other (exit 64) whose message names the flag, the env var the
//! value came from when it did, what the values mean, and the fix.

use clap::error::{ContextKind, ContextValue, ErrorKind};

use crate::EXIT_CONFIG;

/// How the operator gave a setting: the flag when it is on the command line, else the env var
/// when it is set, else the default.
pub fn origin(flag: &str, env: &str) -> String {
    let on_command_line = std::env::args()
        .skip(1)
        .any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if on_command_line {
        flag.to_owned()
    } else if std::env::var_os(env).is_some() {
        env.to_owned()
    } else {
        format!("the default of {flag} / {env}")
    }
}

/// Parses the command line; a rejected value exits 64 with a message that names its source,
/// other usage errors (unknown flags, --help) keep clap's own output and code.
pub fn parse<P: clap::Parser>() -> P {
    match P::try_parse() {
        Ok(parsed) => parsed,
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            eprintln!("error: {}", rejected_value(&P::command(), &e));
            std::process::exit(i32::from(EXIT_CONFIG));
        }
        Err(e) => e.exit(),
    }
}

fn rejected_value(command: &clap::Command, e: &clap::Error) -> String {
    let context = |kind| match e.get(kind) {
        Some(ContextValue::String(s)) => s.clone(),
        _ => String::new(),
    };
    let shown = context(ContextKind::InvalidArg);
    let value = context(ContextKind::InvalidValue);
    let long = shown.split_whitespace().next().unwrap_or("").to_owned();
    let Some(arg) = find_arg(command, long.trim_start_matches("--")) else {
        return e.to_string();
    };
    let source = match arg.get_env().and_then(|env| env.to_str()) {
        Some(env) if origin(&long, env) == env => format!(" (from {env})"),
        _ => String::new(),
    };
    let mut message = format!("invalid value {value:?} for {long}{source}");
    if let Some(reason) = std::error::Error::source(e) {
        message.push_str(&format!(": {reason}"));
    }
    let accepted: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|v| match v.get_help() {
            Some(help) => format!("{} ({help})", v.get_name()),
            None => v.get_name().to_owned(),
        })
        .collect();
    if !accepted.is_empty() {
        message.push_str(&format!("; use one of: {}", accepted.join(", ")));
    }
    if let Some(help) = arg.get_help() {
        message.push_str(&format!(". {long}: {help}"));
    }
    message
}

/// The argument with this long name in the subcommand the command line invoked, or in one of
/// its parents (global flags): `--listen` is `QUAYSIDE_LISTEN` for `registry`, `BIND_ADDR` for
/// `proxy`.
fn find_arg<'c>(command: &'c clap::Command, long: &str) -> Option<&'c clap::Arg> {
    let mut chain = vec![command];
    for word in std::env::args().skip(1) {
        let current = chain[chain.len() - 1];
        if let Some(sub) = current.find_subcommand(&word) {
            chain.push(sub);
        }
    }
    chain
        .iter()
        .rev()
        .find_map(|c| c.get_arguments().find(|a| a.get_long() == Some(long)))
}
