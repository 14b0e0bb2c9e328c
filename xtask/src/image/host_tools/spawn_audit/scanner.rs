//! The programs a Rust source file spawns on the host.
//!
//! Parsed with `syn` rather than matching regexes: string literals come out with
//! their escapes and line continuations resolved (mmdebstrap hooks are `format!` strings split
//! over lines), comments and doc comments are never mistaken for code, and a command's
//! arguments are followed through the method chain and the `let` that holds it (`let mut
//! command = Command::new("ip"); command.args(["netns", "exec", ns, "dnsmasq"])`), which a
//! line-based regex cannot do.
//!
//! What counts as a spawn:
//! - `cmd!(sh, "prog ...")` (xshell), `Command::new(..)`, `sh.cmd(..)`, and `.command(..)`
//!   (the private network's "run this in the namespace");
//! - a `let argv = [..]` / `vec![..]`: by this code base's convention `argv` is a whole command
//!   line, program first (it is handed to `exec::run` or `.args` after a wrapper);
//! - an array starting `"ip", "netns", "exec"`;
//! - mmdebstrap's `--*-hook=` strings, which are shell run on the host, and a string constant
//!   whose name ends in `_SCRIPT` (the same: a shell script the host runs);
//! - and, in any of those, the program a wrapper runs: `timeout [opts] N prog`,
//!   `ip netns exec NS prog`, `sh -c 'script'`. `chroot ROOT prog` runs the image's program,
//!   not the host's, so what follows `chroot` is skipped; so are the guest commands the probes
//!   send over SSH (they are strings, never spawns).
//!
//! A program chosen at run time (a variable) is reported as [`Spawn::Dynamic`]: the audit
//! wants each on its `DYNAMIC` list, which says where the program comes from.

use proc_macro2::Span;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::visit::{self, Visit};
use syn::{Expr, ExprMethodCall, LitStr, Pat, Token};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spawn {
    /// A program named literally.
    Program(String),
    /// A program chosen at run time: the expression as written.
    Dynamic(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub line: usize,
    pub spawn: Spawn,
}

/// One word of a command line.
#[derive(Debug, Clone)]
enum Arg {
    Lit(String),
    /// One word whose value is known only at run time.
    Dynamic(String),
    /// Any number of words (`.args(&argv)`).
    Spread(String),
}

#[derive(Debug, Clone)]
struct Word {
    arg: Arg,
    line: usize,
}

/// The programs `source` spawns, in order.
pub fn scan(source: &str) -> syn::Result<Vec<Found>> {
    let file = syn::parse_file(source)?;
    let mut scanner = Scanner::default();
    scanner.visit_file(&file);
    let mut found = scanner.found;
    for command in &scanner.commands {
        programs(command, &mut found);
    }
    found.sort_by_key(|f| f.line);
    Ok(found)
}

#[derive(Default)]
struct Scanner {
    /// Command lines built from `Command::new` and the `.arg`/`.args` calls on it.
    commands: Vec<Vec<Word>>,
    /// `let` bindings holding a command line, by name, in the function being read (a later
    /// `let` of the same name shadows an earlier one).
    vars: Vec<(String, usize)>,
    /// Spawns found directly (cmd!, hooks).
    found: Vec<Found>,
}

fn line(span: Span) -> usize {
    span.start().line
}

fn text(expr: &Expr) -> String {
    expr.span()
        .source_text()
        .unwrap_or_else(|| "<macro-generated>".to_owned())
}

fn word(expr: &Expr) -> Word {
    let arg = match expr {
        Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(lit),
            ..
        }) => Arg::Lit(lit.value()),
        other => Arg::Dynamic(text(other)),
    };
    Word {
        arg,
        line: line(expr.span()),
    }
}

/// The elements of an array literal (`[..]`, `&[..]`, `vec![..]`), if `expr` is one.
fn list(expr: &Expr) -> Option<Vec<Word>> {
    match expr {
        Expr::Array(array) => Some(array.elems.iter().map(word).collect()),
        Expr::Reference(reference) => list(&reference.expr),
        Expr::Macro(mac) if mac.mac.path.is_ident("vec") => {
            let elems = mac
                .mac
                .parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated)
                .ok()?;
            Some(elems.iter().map(word).collect())
        }
        _ => None,
    }
}

/// The words `.args(expr)` adds.
fn words(expr: &Expr) -> Vec<Word> {
    list(expr).unwrap_or_else(|| {
        vec![Word {
            arg: Arg::Spread(text(expr)),
            line: line(expr.span()),
        }]
    })
}

fn is_command_new(call: &syn::ExprCall) -> bool {
    let Expr::Path(path) = &*call.func else {
        return false;
    };
    let names: Vec<String> = path
        .path
        .segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect();
    names.ends_with(&["Command".to_owned(), "new".to_owned()]) && call.args.len() == 1
}

impl Scanner {
    fn start(&mut self, first: Word) -> usize {
        self.commands.push(vec![first]);
        self.commands.len() - 1
    }

    /// Handles `expr` if it is a command being built (`Command::new(..)` and the calls on it,
    /// `x.cmd(..)`, `x.command(..)`, or calls on a variable holding one), visiting the
    /// expressions nested in it; returns the command's index.
    fn command_chain(&mut self, expr: &Expr) -> Option<usize> {
        let mut calls: Vec<&ExprMethodCall> = Vec::new();
        let mut root = expr;
        while let Expr::MethodCall(call) = root {
            calls.push(call);
            root = &call.receiver;
        }
        calls.reverse();
        let (index, rest) = match root {
            Expr::Call(call) if is_command_new(call) => (self.start(word(&call.args[0])), 0),
            _ => {
                let spawning = calls.iter().position(|c| {
                    (c.method == "cmd" || c.method == "command") && c.args.len() == 1
                });
                match (spawning, root) {
                    (Some(at), _) => (self.start(word(&calls[at].args[0])), at + 1),
                    (None, Expr::Path(path)) => {
                        let name = path.path.get_ident()?.to_string();
                        let (_, index) = self.vars.iter().rev().find(|(n, _)| *n == name)?;
                        (*index, 0)
                    }
                    _ => return None,
                }
            }
        };
        for call in &calls[rest..] {
            match call.method.to_string().as_str() {
                "arg" if call.args.len() == 1 => self.commands[index].push(word(&call.args[0])),
                "args" if call.args.len() == 1 => {
                    let added = words(&call.args[0]);
                    self.commands[index].extend(added);
                }
                _ => {}
            }
        }
        if !matches!(root, Expr::Path(_)) {
            visit::visit_expr(self, root);
        }
        for call in calls {
            for arg in &call.args {
                // A list's words were taken above: visit its elements, not the list again.
                match arg {
                    Expr::Array(array) => array.elems.iter().for_each(|e| self.visit_expr(e)),
                    other => self.visit_expr(other),
                }
            }
        }
        Some(index)
    }

    /// An mmdebstrap hook: shell run on the host with the root as `$1`.
    fn hook(&mut self, lit: &LitStr) {
        let value = lit.value();
        let Some(script) = [
            "--setup-hook=",
            "--extract-hook=",
            "--essential-hook=",
            "--customize-hook=",
        ]
        .iter()
        .find_map(|prefix| value.strip_prefix(prefix)) else {
            return;
        };
        // mmdebstrap's own hook commands (`sync-in DIR DIR` ...) are not programs.
        let special = [
            "copy-in", "copy-out", "tar-in", "tar-out", "sync-in", "sync-out", "upload", "download",
        ];
        if special.contains(&script.split_whitespace().next().unwrap_or_default()) {
            return;
        }
        shell(script, line(lit.span()), &mut self.found);
    }
}

impl<'ast> Visit<'ast> for Scanner {
    fn visit_item_const(&mut self, item: &'ast syn::ItemConst) {
        if item.ident.to_string().ends_with("_SCRIPT") {
            if let Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) = &*item.expr
            {
                shell(&lit.value(), line(lit.span()), &mut self.found);
                return;
            }
        }
        visit::visit_item_const(self, item);
    }

    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        let outer = std::mem::take(&mut self.vars);
        visit::visit_item_fn(self, item);
        self.vars = outer;
    }

    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        let outer = std::mem::take(&mut self.vars);
        visit::visit_impl_item_fn(self, item);
        self.vars = outer;
    }

    fn visit_expr(&mut self, expr: &'ast Expr) {
        if self.command_chain(expr).is_none() {
            visit::visit_expr(self, expr);
        }
    }

    fn visit_local(&mut self, local: &'ast syn::Local) {
        let name = match &local.pat {
            Pat::Ident(ident) => Some(ident.ident.to_string()),
            Pat::Type(typed) => match &*typed.pat {
                Pat::Ident(ident) => Some(ident.ident.to_string()),
                _ => None,
            },
            _ => None,
        };
        let Some(init) = &local.init else {
            return visit::visit_local(self, local);
        };
        if let (Some(name), Some(index)) = (&name, self.command_chain(&init.expr)) {
            self.vars.push((name.clone(), index));
        } else {
            if name.as_deref() == Some("argv") {
                // The convention: `argv` is a whole command line, program first.
                let mut inner = &*init.expr;
                while let Expr::MethodCall(call) = inner {
                    inner = &call.receiver;
                }
                if let Some(words) = list(inner) {
                    self.commands.push(words);
                }
            }
            self.visit_expr(&init.expr);
        }
        if let Some((_, diverge)) = &init.diverge {
            self.visit_expr(diverge);
        }
    }

    fn visit_expr_array(&mut self, array: &'ast syn::ExprArray) {
        let words: Vec<Word> = array.elems.iter().map(word).collect();
        let starts_ip_netns_exec = words
            .iter()
            .take(3)
            .map(|w| match &w.arg {
                Arg::Lit(lit) => lit.as_str(),
                _ => "",
            })
            .eq("ip netns exec".split(' '));
        if starts_ip_netns_exec {
            self.commands.push(words);
        }
        visit::visit_expr_array(self, array);
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        let name = mac
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default();
        if name == "cmd" {
            // xshell: `cmd!(sh, "program args {var} {list...}")`.
            let parsed = mac.parse_body_with(|input: syn::parse::ParseStream| {
                input.parse::<Expr>()?;
                input.parse::<Token![,]>()?;
                input.parse::<LitStr>()
            });
            if let Ok(lit) = parsed {
                let at = line(lit.span());
                let words = shell_words(&lit.value())
                    .into_iter()
                    .map(|(w, _)| Word {
                        arg: if w.contains('{') {
                            Arg::Dynamic(w)
                        } else {
                            Arg::Lit(w)
                        },
                        line: at,
                    })
                    .collect();
                self.commands.push(words);
            }
            return;
        }
        // Other macros (format!, vec!, bail!...): their arguments are expressions, which may
        // hold hooks or commands.
        if let Ok(args) = mac.parse_body_with(Punctuated::<Expr, Token![,]>::parse_terminated) {
            for arg in &args {
                self.visit_expr(arg);
            }
        }
    }

    fn visit_lit_str(&mut self, lit: &'ast LitStr) {
        self.hook(lit);
    }

    fn visit_attribute(&mut self, _: &'ast syn::Attribute) {
        // Doc comments and attributes are text, never commands.
    }
}

/// The programs one command line runs: its program, and what a wrapper in it runs.
fn programs(words: &[Word], found: &mut Vec<Found>) {
    let Some(first) = words.first() else {
        return;
    };
    let program = match &first.arg {
        Arg::Lit(program) => program.as_str(),
        Arg::Dynamic(expr) | Arg::Spread(expr) => {
            found.push(Found {
                line: first.line,
                spawn: Spawn::Dynamic(expr.clone()),
            });
            return;
        }
    };
    found.push(Found {
        line: first.line,
        spawn: Spawn::Program(program.to_owned()),
    });
    let rest = &words[1..];
    let lit = |i: usize| match rest.get(i).map(|w| &w.arg) {
        Some(Arg::Lit(lit)) => Some(lit.as_str()),
        _ => None,
    };
    // Where the wrapped program starts, if this is a wrapper.
    let wrapped = match program {
        "timeout" => {
            let options = (0..rest.len())
                .take_while(|&i| lit(i).is_some_and(|w| w.starts_with('-')))
                .count();
            // A spread before the program hides where the program is: report it.
            match rest.get(options).map(|w| &w.arg) {
                Some(Arg::Spread(_)) => Some(options),
                Some(_) => Some(options + 1),
                None => None,
            }
        }
        "ip" if lit(0) == Some("netns") && lit(1) == Some("exec") => Some(3),
        "sh" | "bash" if lit(0) == Some("-c") => {
            if let Some(script) = lit(1) {
                shell(script, rest[1].line, found);
            }
            None
        }
        // `chroot ROOT program` runs the image's program, not the host's.
        _ => None,
    };
    if let Some(at) = wrapped.filter(|&at| at < rest.len()) {
        programs(&rest[at..], found);
    }
}

/// Splits like a POSIX shell does at the level that matters here: words (quotes removed,
/// `true` when a word had quotes) and the operators between commands as `None`.
fn shell_tokens(script: &str) -> Vec<Option<(String, bool)>> {
    let mut tokens = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = script.chars().peekable();
    let finish = |word: &mut String, quoted: &mut bool, in_word: &mut bool, tokens: &mut Vec<_>| {
        if *in_word {
            tokens.push(Some((std::mem::take(word), *quoted)));
        }
        *quoted = false;
        *in_word = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                quoted = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                quoted = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            ';' | '|' | '\n' => {
                finish(&mut word, &mut quoted, &mut in_word, &mut tokens);
                tokens.push(None);
            }
            '&' if chars.peek() == Some(&'&') => {
                chars.next();
                finish(&mut word, &mut quoted, &mut in_word, &mut tokens);
                tokens.push(None);
            }
            c if c.is_whitespace() => finish(&mut word, &mut quoted, &mut in_word, &mut tokens),
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    finish(&mut word, &mut quoted, &mut in_word, &mut tokens);
    tokens
}

/// The words of a one-command string (xshell's `cmd!`, which has no operators).
fn shell_words(text: &str) -> Vec<(String, bool)> {
    shell_tokens(text).into_iter().flatten().collect()
}

/// The programs a shell script runs on the host, reported at `line`.
fn shell(script: &str, line: usize, found: &mut Vec<Found>) {
    let tokens = shell_tokens(script);
    for command in tokens.split(Option::is_none) {
        let mut words: Vec<&(String, bool)> = command.iter().flatten().collect();
        // Redirections (`> FILE`, `2>&1`, `>/dev/null`) are not words of the command.
        let mut kept = Vec::new();
        let mut skip_next = false;
        for word in words.drain(..) {
            let (text, quoted) = word;
            if skip_next {
                skip_next = false;
                continue;
            }
            let redirect = !quoted
                && text
                    .trim_start_matches(|c: char| c.is_ascii_digit())
                    .starts_with(['>', '<']);
            if redirect {
                skip_next = matches!(
                    text.trim_start_matches(|c: char| c.is_ascii_digit()),
                    ">" | ">>" | "<"
                );
                continue;
            }
            kept.push((text.as_str(), *quoted));
        }
        // Keywords that lead into a command, and variable assignments before it.
        let start = kept
            .iter()
            .take_while(|(w, quoted)| {
                !quoted
                    && ([
                        "if", "then", "else", "elif", "do", "while", "until", "!", "{",
                    ]
                    .contains(w)
                        || w.split_once('=').is_some_and(|(name, _)| {
                            !name.is_empty()
                                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        }))
            })
            .count();
        let kept = &kept[start..];
        if kept
            .first()
            .is_none_or(|(w, _)| ["fi", "done", "}"].contains(w))
        {
            continue;
        }
        let words: Vec<Word> = kept
            .iter()
            .map(|(w, _)| Word {
                arg: if w.contains('$') {
                    Arg::Dynamic((*w).to_owned())
                } else {
                    Arg::Lit((*w).to_owned())
                },
                line,
            })
            .collect();
        programs(&words, found);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn programs_in(source: &str) -> Vec<String> {
        scan(source)
            .unwrap()
            .into_iter()
            .map(|f| match f.spawn {
                Spawn::Program(p) => p,
                Spawn::Dynamic(e) => format!("dynamic:{e}"),
            })
            .collect()
    }

    #[test]
    fn finds_each_spawn_form_with_its_line() {
        let source = r#"
fn build(sh: &Shell, root: &Path, ns: &str, list: &[String]) {
    cmd!(sh, "frobnicate --now {root}").run();
    cmd!(
        sh,
        "chroot {root} useradd --create-home admin"
    ).run();
    let status = std::process::Command::new("xz").args(["-T0"]).status();
    let mut dhcp = Command::new("ip");
    dhcp.args(["netns", "exec", ns, "dnsmasq", "--port=0"]).arg("--log-dhcp");
    let mut limited = Command::new("timeout");
    limited.args(["--kill-after=5", &secs]);
    limited.args(["ip", "netns", "exec", ns]);
    limited.args(list);
    network.command("timeout").arg("180").args(&ssh);
    sh.cmd("wrk").arg("--version");
    let mut argv: Vec<&str> = vec!["ssh", "-b", &source];
    let hooks = vec![format!(
        "--customize-hook=if [ -x \"$1\"/x ]; then chroot \"$1\" python3 -m x || true; fi && \
         mkdir -p \"$1\"/y > /dev/null 2>&1; echo {n} | sha512sum"
    )];
    let copy = "--setup-hook=sync-in {cache} /var/cache/apt/archives/";
    cmd!(sh, "sh -c 'xz -dc \"$0\" | dd of=\"$1\"' {a} {b}");
    /// Doc comments are no code: cmd!(sh, "nothing-here")
    let guest = session.run("nft list ruleset");
}
const LAYER_SCRIPT: &str = "set -eu\nmount -t proc proc \"$1/proc\"\nchroot \"$1\" apt-get update";
"#;
        let found = scan(source).unwrap();
        assert_eq!(
            programs_in(source),
            [
                "frobnicate",
                "chroot",
                "xz",
                "ip",
                "dnsmasq",
                "timeout",
                "ip",
                "dynamic:list",
                "timeout",
                "dynamic:&ssh",
                "wrk",
                "ssh",
                "[",
                "chroot",
                "true",
                "mkdir",
                "echo",
                "sha512sum",
                "sh",
                "xz",
                "dd",
                "set",
                "mount",
                "chroot",
            ]
            .map(str::to_owned),
            "{found:#?}"
        );
        assert_eq!(found[0].line, 3, "{found:#?}");
        let dnsmasq = found
            .iter()
            .find(|f| f.spawn == Spawn::Program("dnsmasq".into()))
            .unwrap();
        assert_eq!(dnsmasq.line, 10);
    }
}
