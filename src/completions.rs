//! Shell completion scripts (`tagflow completions bash|zsh|fish`), generated from the clap
//! command tree so that a new flag or subcommand is completed without touching this file.
//! Written here because `clap_complete` is not available to this build; it covers what tagflow's
//! CLI uses: subcommands, long flags (global ones everywhere), their possible values, and file
//! arguments.

use std::fmt::Write as _;

use clap::{Arg, ArgAction, Command, ValueHint};

/// Shells `tagflow completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (`source <(tagflow completions bash)`).
    Bash,
    /// zsh (save as `_tagflow` in a directory of `$fpath`).
    Zsh,
    /// fish (save as `~/.config/fish/completions/tagflow.fish`).
    Fish,
}

/// The completion script for `shell` of `cmd` (the CLI's `Cli::command()`).
pub fn generate(shell: Shell, cmd: &Command) -> String {
    let tree = Tree::new(cmd);
    match shell {
        Shell::Bash => bash(&tree),
        Shell::Zsh => zsh(&tree),
        Shell::Fish => fish(&tree),
    }
}

/// One long flag as the scripts need it.
struct Flag {
    long: String,
    help: String,
    /// Takes a value.
    value: bool,
    /// The value is a path.
    path: bool,
    /// The only values it takes, when clap knows them.
    choices: Vec<String>,
}

/// The command, its global flags and each subcommand's own flags and positional file arguments.
struct Tree {
    name: String,
    global: Vec<Flag>,
    subcommands: Vec<(String, String, Vec<Flag>, bool)>,
}

fn first_line(help: Option<&clap::builder::StyledStr>) -> String {
    let text = help.map(ToString::to_string).unwrap_or_default();
    let line = text.lines().next().unwrap_or_default();
    line.trim_end_matches('.').to_owned()
}

fn is_path(arg: &Arg) -> bool {
    matches!(
        arg.get_value_hint(),
        ValueHint::AnyPath | ValueHint::FilePath | ValueHint::DirPath
    )
}

fn flag(arg: &Arg) -> Option<Flag> {
    let long = arg.get_long()?.to_owned();
    let value = matches!(arg.get_action(), ArgAction::Set | ArgAction::Append);
    let choices = arg
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .collect();
    Some(Flag {
        long,
        help: first_line(arg.get_help()),
        value,
        path: is_path(arg),
        choices,
    })
}

impl Tree {
    fn new(cmd: &Command) -> Self {
        let mut cmd = cmd.clone();
        // Materializes --help/--version and propagates global flags into the subcommands.
        cmd.build();
        let global = cmd
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(flag)
            .collect();
        let subcommands = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .map(|s| {
                let own: Vec<Flag> = s
                    .get_arguments()
                    .filter(|a| !a.is_hide_set() && !a.is_global_set())
                    .filter_map(flag)
                    .collect();
                let files = s.get_positionals().any(is_path);
                (
                    s.get_name().to_owned(),
                    first_line(s.get_about()),
                    own,
                    files,
                )
            })
            .collect();
        Tree {
            name: cmd.get_name().to_owned(),
            global,
            subcommands,
        }
    }
}

fn longs(flags: &[Flag]) -> String {
    flags
        .iter()
        .map(|f| format!("--{}", f.long))
        .collect::<Vec<_>>()
        .join(" ")
}

fn bash(t: &Tree) -> String {
    let name = &t.name;
    let subs: Vec<&str> = t.subcommands.iter().map(|s| s.0.as_str()).collect();
    let mut s = format!(
        "# bash completion for {name}: source <({name} completions bash)\n\
         _{name}() {{\n\
         \x20   local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} sub= i\n\
         \x20   for ((i = 1; i < COMP_CWORD; i++)); do\n\
         \x20       case ${{COMP_WORDS[i]}} in\n\
         \x20           {}) sub=${{COMP_WORDS[i]}}; break ;;\n\
         \x20       esac\n\
         \x20   done\n\
         \x20   case $prev in\n",
        subs.join("|")
    );
    let all = t
        .global
        .iter()
        .chain(t.subcommands.iter().flat_map(|s| s.2.iter()));
    let mut seen = std::collections::BTreeSet::new();
    for f in all.filter(|f| f.value) {
        if !seen.insert(&f.long) {
            continue;
        }
        let action = if !f.choices.is_empty() {
            format!(
                "COMPREPLY=($(compgen -W '{}' -- \"$cur\"))",
                f.choices.join(" ")
            )
        } else if f.path {
            "COMPREPLY=($(compgen -f -- \"$cur\"))".to_owned()
        } else {
            "COMPREPLY=()".to_owned()
        };
        let _ = writeln!(s, "        --{}) {action}; return ;;", f.long);
    }
    s.push_str("    esac\n    local words\n    case $sub in\n");
    let global = longs(&t.global);
    for (sub, _, own, files) in &t.subcommands {
        let _ = writeln!(
            s,
            "        {sub}) words=\"{} {global}\"{} ;;",
            longs(own),
            if *files {
                "; [[ $cur != -* ]] && COMPREPLY=($(compgen -f -- \"$cur\")) && return"
            } else {
                ""
            }
        );
    }
    let _ = writeln!(s, "        *) words=\"{} {global}\" ;;", subs.join(" "));
    let _ = write!(
        s,
        "    esac\n    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n}}\ncomplete -F _{name} {name}\n"
    );
    s
}

/// zsh `_arguments` spec text, quoted for a single-quoted string.
fn zsh_quote(text: &str) -> String {
    text.replace('\'', "'\\''")
        .replace('[', "\\[")
        .replace(']', "\\]")
        .replace(':', "\\:")
}

fn zsh_spec(f: &Flag) -> String {
    let help = zsh_quote(&f.help);
    let value = if !f.value {
        String::new()
    } else if !f.choices.is_empty() {
        format!(":{}:({})", f.long, f.choices.join(" "))
    } else if f.path {
        format!(":{}:_files", f.long)
    } else {
        format!(":{}:", f.long)
    };
    format!("'--{}[{help}]{value}'", f.long)
}

fn zsh(t: &Tree) -> String {
    let name = &t.name;
    let global: Vec<String> = t.global.iter().map(zsh_spec).collect();
    let mut s = format!(
        "#compdef {name}\n# zsh completion for {name}: save as _{name} in a directory of $fpath.\n\
         _{name}() {{\n    local -a global commands\n    global=(\n"
    );
    for g in &global {
        let _ = writeln!(s, "        {g}");
    }
    s.push_str("    )\n    commands=(\n");
    for (sub, about, _, _) in &t.subcommands {
        let _ = writeln!(s, "        '{sub}:{}'", zsh_quote(about));
    }
    s.push_str(
        "    )\n    local curcontext=$curcontext state line\n    \
         _arguments -C $global '1: :->command' '*:: :->args'\n    \
         case $state in\n        command) _describe command commands ;;\n        \
         args)\n            case $words[1] in\n",
    );
    for (sub, _, own, files) in &t.subcommands {
        let specs: Vec<String> = own.iter().map(zsh_spec).collect();
        let rest = if *files { " '*:file:_files'" } else { "" };
        let _ = writeln!(
            s,
            "                {sub}) _arguments $global {}{rest} ;;",
            specs.join(" ")
        );
    }
    let _ = write!(s, "            esac ;;\n    esac\n}}\n_{name} \"$@\"\n");
    s
}

fn fish_flag(name: &str, cond: &str, f: &Flag) -> String {
    let mut line = format!("complete -c {name}{cond} -l {}", f.long);
    if !f.help.is_empty() {
        let _ = write!(
            line,
            " -d '{}'",
            f.help.replace('\\', "\\\\").replace('\'', "\\'")
        );
    }
    if !f.choices.is_empty() {
        let _ = write!(line, " -x -a '{}'", f.choices.join(" "));
    } else if f.path {
        line.push_str(" -r -F");
    } else if f.value {
        line.push_str(" -x");
    }
    line
}

fn fish(t: &Tree) -> String {
    let name = &t.name;
    let mut s = format!(
        "# fish completion for {name}: save as ~/.config/fish/completions/{name}.fish\n\
         complete -c {name} -f\n"
    );
    for f in &t.global {
        let _ = writeln!(s, "{}", fish_flag(name, "", f));
    }
    for (sub, about, own, files) in &t.subcommands {
        let about = about.replace('\'', "\\'");
        let _ = writeln!(
            s,
            "complete -c {name} -n __fish_use_subcommand -a {sub} -d '{about}'"
        );
        let cond = format!(" -n '__fish_seen_subcommand_from {sub}'");
        for f in own {
            let _ = writeln!(s, "{}", fish_flag(name, &cond, f));
        }
        if *files {
            let _ = writeln!(s, "complete -c {name}{cond} -F");
        }
    }
    s
}
