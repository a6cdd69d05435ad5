//! Each kt-connect flag, long and short, on a line kt-connect would run: accepted ones parse and
//! change what ktx does, refused ones fail with their reason; the README lists every one.

use super::super::Cli;
use super::*;
use clap::Parser;

/// The subcommand line a flag of `scope` is tried on (the flag itself appended).
fn base(scope: &str) -> Vec<&'static str> {
    match scope {
        "global" | "mesh" => vec!["mesh", "tomcat", "--expose", "9999"],
        "exchange" => vec!["exchange", "tomcat", "--expose", "9999"],
        "preview" => vec!["preview", "tomcat-preview", "--expose", "9999"],
        other => panic!("unknown scope {other}"),
    }
}

/// `ktx [global flag] CMD TARGET --expose P [command flag]`, parsed and resolved.
fn line(f: &Flag, name: String) -> (Vec<String>, Result<Cli, clap::Error>) {
    let mut args: Vec<String> = vec!["ktx".into()];
    let mut flag_args = vec![name];
    if let Some(v) = f.example {
        flag_args.push(v.to_string());
    }
    let mut cmd: Vec<String> = base(f.scope).into_iter().map(String::from).collect();
    if f.long == "expose" {
        cmd.truncate(2);
    }
    if f.scope == "global" {
        args.extend(flag_args);
        args.extend(cmd);
    } else {
        args.extend(cmd);
        args.extend(flag_args);
    }
    let parsed = Cli::try_parse_from(&args).map(Cli::resolved);
    (args, parsed)
}

fn baseline(scope: &str) -> String {
    let args = std::iter::once("ktx").chain(base(scope));
    format!("{:?}", Cli::try_parse_from(args).unwrap().resolved())
}

#[test]
fn every_kt_connect_flag_is_accepted_or_refused_with_its_reason() {
    for f in FLAGS {
        let mut names = vec![format!("--{}", f.long)];
        if let Some(c) = f.short {
            names.push(format!("-{c}"));
        }
        for name in names {
            let (args, parsed) = line(f, name);
            match (f.fate, parsed) {
                (Fate::Accepted(_), Ok(cli)) => assert_ne!(
                    format!("{cli:?}"),
                    baseline(f.scope),
                    "{args:?} parses but changes nothing"
                ),
                (Fate::Accepted(_), Err(e)) => panic!("{args:?} is refused: {e}"),
                (Fate::Refused(why), Ok(_)) => panic!("{args:?} is accepted, should say: {why}"),
                (Fate::Refused(why), Err(e)) => assert!(
                    e.to_string().contains(why),
                    "{args:?} fails without its reason: {e}"
                ),
            }
        }
    }
}

#[test]
fn the_readme_lists_every_flag_with_its_fate() {
    let readme = include_str!("../../../../README.md");
    let section = readme
        .split("## kt-connect compatibility")
        .nth(1)
        .expect("README has a section \"## kt-connect compatibility\"");
    let section = section.split("\n## ").next().unwrap_or(section);
    for f in FLAGS {
        let row = section
            .lines()
            .find(|l| {
                l.starts_with('|')
                    && l.contains(&format!("`--{}", f.long))
                    && l.contains(f.scope)
                    && f.example
                        .is_none_or(|v| f.long != "mode" || l.contains(&format!("`--mode {v}`")))
            })
            .unwrap_or_else(|| panic!("no README row for {} --{}", f.scope, f.long));
        if let Fate::Refused(_) = f.fate {
            assert!(row.contains("refused"), "{row} does not say refused");
        }
    }
}
