//! The agent's commands out of audit records: each `execve` event the image's rules tag
//! `clawfort-exec` (overlays/etc/audit/rules.d/clawfort.rules.tera) becomes one [`Command`].
//!
//! An event is the records sharing one [`Stamp`]: SYSCALL (who, success, exit), EXECVE (the
//! arguments, long ones split into chunks `a1[0]`, `a1[1]`... possibly over several records),
//! CWD, PATH and PROCTITLE; EOE ends it.

use std::collections::HashMap;

use serde::Serialize;

use super::record::{decode_hex, decode_untrusted, Record, Stamp};

/// The rule key of the service user's `execve`s.
pub const EXEC_KEY: &str = "clawfort-exec";

/// Several keys on one event are joined with this byte (and then hex-encoded).
const KEY_SEPARATOR: char = '\x01';

/// How many parents [`unit_of`] follows: the gateway's commands are a few levels below it.
const MAX_ANCESTRY: usize = 16;

/// One program the service user started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    /// RFC 3339, UTC, to the millisecond.
    pub time: String,
    /// The event's serial number (`ausearch -a <serial>` shows all its records).
    pub serial: u64,
    pub pid: u32,
    pub ppid: u32,
    pub uid: u32,
    /// The program the kernel ran (after `#!`, the interpreter).
    pub exe: Option<String>,
    /// The arguments, `argv[0]` first.
    pub argv: Vec<String>,
    pub cwd: Option<String>,
    /// The systemd unit the command ran under, when the log shows which of the gateway's
    /// processes started it (see [`unit_of`]).
    pub unit: Option<String>,
    /// Whether the `execve` itself worked; `exit` is its return value (0, or minus the
    /// errno: -13 is EACCES). The program's own exit status is not audited.
    pub success: bool,
    pub exit: i64,
}

/// Groups records into events (keyed by stamp, in the order they first appear) and returns
/// the agent's commands among them, oldest first.
pub fn commands(records: impl IntoIterator<Item = Record>) -> Vec<Command> {
    let mut order: Vec<Stamp> = Vec::new();
    let mut events: HashMap<Stamp, Vec<Record>> = HashMap::new();
    for record in records {
        let stamp = record.stamp;
        events
            .entry(stamp)
            .or_insert_with(|| {
                order.push(stamp);
                Vec::new()
            })
            .push(record);
    }
    // The latest program each pid ran, for finding a command's unit through its parents.
    let mut programs: HashMap<u32, Command> = HashMap::new();
    let mut out = Vec::new();
    for stamp in order {
        let Some(mut command) = events.get(&stamp).and_then(|e| command(stamp, e)) else {
            continue;
        };
        command.unit = unit_of(&command, &programs);
        programs.insert(command.pid, command.clone());
        out.push(command);
    }
    out
}

/// The command of one event, `None` when it is not a tagged `execve`.
fn command(stamp: Stamp, records: &[Record]) -> Option<Command> {
    let syscall = records.iter().find(|r| r.kind == "SYSCALL")?;
    let keys = syscall.untrusted("key")?;
    if !keys.split(KEY_SEPARATOR).any(|k| k == EXEC_KEY) {
        return None;
    }
    let argv = arguments(records.iter().filter(|r| r.kind == "EXECVE"))
        .or_else(|| proctitle(records))
        .unwrap_or_default();
    Some(Command {
        time: time(stamp),
        serial: stamp.serial,
        pid: syscall.number("pid")?,
        ppid: syscall.number("ppid")?,
        uid: syscall.number("uid")?,
        exe: syscall.untrusted("exe"),
        argv,
        cwd: records
            .iter()
            .find(|r| r.kind == "CWD")
            .and_then(|r| r.untrusted("cwd")),
        unit: None,
        success: syscall.fields.get("success").map(|v| v.text.as_str()) == Some("yes"),
        exit: syscall.number("exit").unwrap_or_default(),
    })
}

/// The arguments of the EXECVE records: `argc`, then `a0`... or, for an argument too long
/// for one record, `a1_len` and its chunks `a1[0]`, `a1[1]`... each encoded like a whole
/// argument. `None` without an `argc`.
fn arguments<'r>(execve: impl Iterator<Item = &'r Record>) -> Option<Vec<String>> {
    let execve: Vec<&Record> = execve.collect();
    let argc: usize = execve.iter().find_map(|r| r.number("argc"))?;
    // argc comes from a process; never trust it to size an allocation.
    let mut argv = Vec::with_capacity(argc.min(1024));
    for i in 0..argc {
        let whole = format!("a{i}");
        if let Some(arg) = execve.iter().find_map(|r| r.fields.get(&whole)) {
            argv.push(decode_untrusted(arg).unwrap_or_default());
            continue;
        }
        let mut bytes = Vec::new();
        for chunk in 0.. {
            let name = format!("a{i}[{chunk}]");
            let Some(part) = execve.iter().find_map(|r| r.fields.get(&name)) else {
                break;
            };
            let decoded = if part.quoted {
                None
            } else {
                decode_hex(&part.text)
            };
            bytes.extend(decoded.unwrap_or_else(|| part.text.as_bytes().to_vec()));
        }
        argv.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Some(argv)
}

/// PROCTITLE (the command line, NUL-separated, cut at 128 bytes): the fallback when the
/// EXECVE record is missing.
fn proctitle(records: &[Record]) -> Option<Vec<String>> {
    let title = records.iter().find(|r| r.kind == "PROCTITLE")?;
    let value = title.fields.get("proctitle")?;
    let bytes = match value.quoted {
        true => value.text.as_bytes().to_vec(),
        false => decode_hex(&value.text)?,
    };
    Some(
        bytes
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

fn time(stamp: Stamp) -> String {
    let nanos = i32::try_from(stamp.millis.min(999) * 1_000_000).unwrap_or_default();
    jiff::Timestamp::new(stamp.secs, nanos)
        .map(|t| format!("{t:.3}"))
        .unwrap_or_else(|_| stamp.secs.to_string())
}

/// The unit a command ran in, from the programs the log shows its parents (and itself)
/// running: the gateway's host commands are children of `clawfort exec-runner`
/// (clawfort-exec@.service), the gateway is `clawfort gateway` (clawfort.service), the
/// sandbox's containers descend from the service user's rootless Docker. `None` when no
/// known program is among the parents the log still holds (a parent started before the
/// oldest rotated log, or by another user).
pub fn unit_of(command: &Command, programs: &HashMap<u32, Command>) -> Option<String> {
    let mut current = Some(command);
    for _ in 0..MAX_ANCESTRY {
        let program = current?;
        if let Some(unit) = known_unit(program) {
            return Some(unit.to_owned());
        }
        // pid 1 and a loop (a reused pid naming itself) end the walk.
        if program.ppid <= 1 || program.ppid == program.pid {
            return None;
        }
        current = programs.get(&program.ppid);
    }
    None
}

fn known_unit(program: &Command) -> Option<&'static str> {
    let name = program.exe.as_deref()?.rsplit('/').next()?;
    match (name, program.argv.get(1).map(String::as_str)) {
        ("clawfort", Some("exec-runner")) => Some("clawfort-exec@.service"),
        ("clawfort", Some("gateway")) => Some("clawfort.service"),
        ("rootlesskit" | "dockerd" | "containerd" | "containerd-shim-runc-v2", _) => {
            Some("docker.service (the service user's rootless Docker)")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &str) -> Vec<Command> {
        commands(lines.lines().map(|l| Record::parse(l.trim()).unwrap()))
    }

    /// The runner, then the command it starts, as the records of two events.
    const RUNNER_THEN_COMMAND: &str = "\
        type=SYSCALL msg=audit(1764468000.100:10): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=700 auid=4294967295 uid=1001 comm=\"clawfort\" exe=\"/usr/bin/clawfort\" key=\"clawfort-exec\"
        type=EXECVE msg=audit(1764468000.100:10): argc=2 a0=\"/usr/bin/clawfort\" a1=\"exec-runner\"
        type=CWD msg=audit(1764468000.100:10): cwd=\"/\"
        type=SYSCALL msg=audit(1764468000.250:11): arch=c000003e syscall=59 success=yes exit=0 ppid=700 pid=701 auid=4294967295 uid=1001 comm=\"bash\" exe=\"/usr/bin/bash\" key=\"clawfort-exec\"
        type=EXECVE msg=audit(1764468000.250:11): argc=3 a0=\"bash\" a1=\"-c\" a2=6563686F2068656C6C6F
        type=CWD msg=audit(1764468000.250:11): cwd=\"/home/openclaw/workspace\"
        type=PROCTITLE msg=audit(1764468000.250:11): proctitle=62617368002D63";

    #[test]
    fn an_execve_event_becomes_a_command_with_its_unit_from_its_parent() {
        let commands = parse(RUNNER_THEN_COMMAND);
        assert_eq!(commands.len(), 2);
        let bash = &commands[1];
        assert_eq!(bash.argv, ["bash", "-c", "echo hello"]);
        assert_eq!(bash.cwd.as_deref(), Some("/home/openclaw/workspace"));
        assert_eq!(bash.unit.as_deref(), Some("clawfort-exec@.service"));
        assert_eq!(bash.time, "2025-11-30T02:00:00.250Z");
        assert_eq!((bash.pid, bash.ppid, bash.uid), (701, 700, 1001));
        assert!(bash.success);
    }

    #[test]
    fn events_of_other_keys_are_not_commands() {
        let lines = "\
            type=SYSCALL msg=audit(1764468000.1:5): arch=c000003e syscall=257 success=yes exit=3 ppid=1 pid=9 uid=0 comm=\"systemd\" exe=\"/usr/lib/systemd/systemd\" key=\"clawfort-secrets\"
            type=SYSCALL msg=audit(1764468000.2:6): arch=c000003e syscall=59 success=yes exit=0 ppid=1 pid=9 uid=0 comm=\"x\" exe=\"/x\" key=(null)";
        assert!(parse(lines).is_empty());
    }

    #[test]
    fn long_arguments_come_in_chunks_and_several_keys_are_hex() {
        // key: "other\x01clawfort-exec" hex-encoded, as the kernel writes several keys.
        let lines = "\
            type=SYSCALL msg=audit(1764468000.5:20): arch=c000003e syscall=59 success=no exit=-13 ppid=3 pid=4 uid=1001 comm=\"sh\" exe=\"/usr/bin/dash\" key=6F7468657201636C6177666F72742D65786563
            type=EXECVE msg=audit(1764468000.5:20): argc=2 a0=\"sh\" a1_len=8 a1[0]=6C6F6E67
            type=EXECVE msg=audit(1764468000.5:20): a1[1]=\"_arg\"";
        let commands = parse(lines);
        assert_eq!(commands[0].argv, ["sh", "long_arg"]);
        assert!(!commands[0].success);
        assert_eq!(commands[0].exit, -13);
        assert_eq!(commands[0].unit, None);
    }

    #[test]
    fn without_an_execve_record_the_proctitle_gives_the_arguments() {
        let lines = "\
            type=SYSCALL msg=audit(1764468000.5:21): arch=c000003e syscall=59 success=yes exit=0 ppid=3 pid=4 uid=1001 comm=\"ls\" exe=\"/usr/bin/ls\" key=\"clawfort-exec\"
            type=PROCTITLE msg=audit(1764468000.5:21): proctitle=6C73002D6C";
        assert_eq!(parse(lines)[0].argv, ["ls", "-l"]);
    }

    #[test]
    fn a_parent_loop_ends_the_walk() {
        let mut programs = HashMap::new();
        let mut a = parse(RUNNER_THEN_COMMAND)[1].clone();
        a.argv = vec!["x".to_owned()];
        a.exe = Some("/x".to_owned());
        a.pid = 5;
        a.ppid = 6;
        let mut b = a.clone();
        b.pid = 6;
        b.ppid = 5;
        programs.insert(5, a.clone());
        programs.insert(6, b);
        assert_eq!(unit_of(&a, &programs), None);
    }
}

/// Lines from the appliance's own audit log (x86_64, auditd 4.0.2, `log_format = ENRICHED`):
/// the first boot's gateway-token unit (`User=openclaw`) running its script and two commands.
#[cfg(test)]
mod guest_lines {
    use super::*;

    const GUEST_BOOT: &str = include_str!("testdata/guest-boot.log");

    #[test]
    fn the_guests_records_become_its_commands() {
        let records: Vec<Record> = GUEST_BOOT
            .lines()
            .map(|l| Record::parse(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(records.len(), 21);
        let commands = commands(records);
        let argv: Vec<Vec<&str>> = commands
            .iter()
            .map(|c| c.argv.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            argv,
            [
                vec!["/bin/sh", "/usr/libexec/clawfort/gateway-token"],
                vec!["mkdir", "-p", "/home/openclaw/.openclaw"],
                vec!["chmod", "700", "/home/openclaw/.openclaw"],
            ]
        );
        let mkdir = &commands[1];
        assert_eq!(mkdir.exe.as_deref(), Some("/usr/bin/mkdir"));
        assert_eq!(mkdir.cwd.as_deref(), Some("/"));
        assert_eq!((mkdir.uid, mkdir.ppid), (1001, commands[0].pid));
        assert_eq!(mkdir.time, "2026-11-30T03:04:03.311Z");
        assert!(mkdir.success && mkdir.exit == 0);
    }
}
