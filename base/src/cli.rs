//! Front-end behaviour the three binaries (`task-defs`, `provider`, `requestor`) share:
//! quiet broken pipes, and shell completions and man pages generated from their clap
//! definitions (so they cannot drift from the real flags).
//!
//! A reader that stops early (`provider jobs | head -2`) closes the pipe; Rust ignores
//! SIGPIPE, so the next `println!` panics and a `writeln!` returns `EPIPE`. Neither is a
//! failure of ours: the program ends quietly with exit code 0, as a filter would.

use std::io::ErrorKind;

/// EPIPE on Linux, the only platform pinfold runs on.
const EPIPE: i32 = 32;

/// Installs a panic hook that ends the process quietly (exit 0) when the panic is
/// `println!`/`print!` failing on a closed stdout or stderr, and defers to the previous
/// hook for every other panic. Call first thing in `main`.
pub fn exit_quietly_on_broken_pipe() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if is_broken_pipe_message(msg) {
            std::process::exit(0);
        }
        previous(info);
    }));
}

/// Whether a panic message is std's `failed printing to stdout: <EPIPE>`.
fn is_broken_pipe_message(msg: &str) -> bool {
    msg.starts_with("failed printing to std")
        && msg.ends_with(&std::io::Error::from_raw_os_error(EPIPE).to_string())
}

/// Whether an error (anywhere in its chain) is a write to a closed pipe, which the caller
/// should treat as a quiet exit rather than report.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}

/// An error and its causes joined by `: ` like anyhow's `{:#}`, except that a cause whose
/// text the message before it already ends with is left out: error types that print their
/// source in their own message (`path: {source}`) otherwise doubled it
/// (`x: No such file or directory (os error 2): No such file or directory (os error 2)`).
pub fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Adds each subcommand's `--help` epilogue (examples and exit codes) from `texts`, keyed by
/// the subcommand's path (`"review approve"`), and those of the `completions` and `man`
/// subcommands every binary has (`io_error_code`: its exit code for a failed write). Kept
/// in one table per binary rather than spread over the argument structs. Panics on a path
/// that names no subcommand, so a renamed command cannot silently lose its help.
pub fn with_help(cmd: clap::Command, texts: &[(&str, &str)], io_error_code: u8) -> clap::Command {
    fn apply(cmd: clap::Command, path: &[&str], text: &str) -> clap::Command {
        match path {
            [] => cmd.after_help(text.to_string()),
            [first, rest @ ..] => {
                assert!(
                    cmd.find_subcommand(first).is_some(),
                    "help text for unknown subcommand {first:?} of {}",
                    cmd.get_name()
                );
                cmd.mut_subcommand(*first, |c| apply(c, rest, text))
            }
        }
    }
    let name = cmd.get_name().to_string();
    let completions = format!(
        "examples:\n  {name} completions bash > /etc/bash_completion.d/{name}\n  \
         {name} completions zsh > ~/.zfunc/_{name}\n\n\
         exit codes: 0 printed, 2 unknown shell"
    );
    let man = format!(
        "examples:\n  {name} man | man -l -\n  {name} man --dir /usr/local/share/man/man1\n\n\
         exit codes: 0 written, 2 usage error, {io_error_code} could not write"
    );
    let common = [("completions", completions.as_str()), ("man", man.as_str())];
    texts
        .iter()
        .copied()
        .chain(common)
        .fold(cmd, |cmd, (path, text)| {
            let path: Vec<&str> = path.split_whitespace().collect();
            apply(cmd, &path, text)
        })
}

/// Parses the command line against `cmd` (the derived command with its help texts). A usage
/// error when `--json` was given is printed as `{"error": ..., "exit_code": 2}` on stdout,
/// so a script reading JSON gets JSON even for a mistyped flag; otherwise clap reports it.
pub fn parse<C: clap::FromArgMatches>(cmd: clap::Command) -> C {
    let json = std::env::args_os().any(|a| a == "--json");
    let result = cmd.try_get_matches().and_then(|m| C::from_arg_matches(&m));
    match result {
        Ok(c) => c,
        Err(e) if json && e.use_stderr() => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("usage error");
            let msg = first.strip_prefix("error: ").unwrap_or(first);
            println!(
                "{}",
                serde_json::json!({"ok": false, "error": msg, "exit_code": e.exit_code()})
            );
            std::process::exit(e.exit_code());
        }
        Err(e) => e.exit(),
    }
}

/// The JSON object an error is printed as in `--json` mode (on stdout, where the caller
/// reads JSON): `{"ok": false, "error": ..., "exit_code": ...}`, the shape the requestor's
/// own JSON failures already had.
pub fn json_error(message: &str, exit_code: i32) -> String {
    serde_json::json!({"ok": false, "error": message, "exit_code": exit_code}).to_string()
}

/// Arguments of the `completions` subcommand every binary has.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Arguments of the `man` subcommand every binary has.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write one page per command (`NAME.1`, `NAME-SUB.1`, ...) into this directory instead
    /// of printing the top-level page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

/// The completion script of `cmd` for `shell`.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) -> Vec<u8> {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    out
}

/// Man pages for `cmd` and each visible subcommand, as (file name, roff text).
pub fn man_pages(cmd: clap::Command) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(
        cmd: clap::Command,
        name: String,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> std::io::Result<()> {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .title(name.clone())
            .render(&mut page)?;
        out.push((format!("{name}.1"), page));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() == "help" {
                continue;
            }
            walk(sub.clone(), format!("{name}-{}", sub.get_name()), out)?;
        }
        Ok(())
    }
    let mut cmd = cmd;
    cmd.build();
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    walk(cmd, name, &mut out)?;
    Ok(out)
}

/// Runs a `completions` subcommand: the script on stdout.
pub fn run_completions(cmd: clap::Command, a: &CompletionsArgs) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    out.write_all(&completions(cmd, a.shell))?;
    out.flush()
}

/// Runs a `man` subcommand: the top-level page on stdout, or every page into `--dir`.
pub fn run_man(cmd: clap::Command, a: &ManArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    let pages = man_pages(cmd).context("rendering the man pages")?;
    match &a.dir {
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&pages[0].1)?;
            out.flush()?;
        }
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, page) in &pages {
                let p = dir.join(name);
                std::fs::write(&p, page).with_context(|| format!("writing {}", p.display()))?;
                println!("{}", p.display());
            }
        }
    }
    Ok(())
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM: the shutdown future the binaries' servers
/// (a provider node, a registry, a witness) are given, so `systemctl stop` and Ctrl-C end them
/// the same orderly way.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_already_in_its_parent_message_is_not_repeated() {
        #[derive(Debug, thiserror::Error)]
        #[error("{path}: {source}")]
        struct Io {
            path: String,
            source: std::io::Error,
        }
        let io = std::io::Error::from(ErrorKind::NotFound);
        let text = io.to_string();
        let e = anyhow::Error::from(Io {
            path: "x".into(),
            source: io,
        })
        .context("loading");
        assert_eq!(chain(&e), format!("loading: x: {text}"));
        assert_eq!(
            format!("{e:#}").matches(&text).count(),
            2,
            "anyhow doubles it"
        );
    }

    #[test]
    fn recognises_std_print_failures_on_a_closed_pipe_only() {
        let epipe = std::io::Error::from_raw_os_error(EPIPE);
        assert!(is_broken_pipe_message(&format!(
            "failed printing to stdout: {epipe}"
        )));
        assert!(!is_broken_pipe_message(
            "failed printing to stdout: No space left on device (os error 28)"
        ));
        assert!(!is_broken_pipe_message("index out of bounds"));
        let e = anyhow::Error::from(epipe).context("writing the table");
        assert!(is_broken_pipe(&e));
        assert_eq!(
            chain(&e),
            format!(
                "writing the table: {}",
                std::io::Error::from_raw_os_error(EPIPE)
            )
        );
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
