//! `velourfog`, the command line for a Velour Fog cluster. Data commands read and write keys
//! through the frontends; admin commands show the controller's view of the cluster, approve
//! waiting storage nodes, remove nodes and change the replication factor K, optionally
//! waiting until the partitions have moved.
//!
//! `get`, `set` and `delete` go through the [`client`] library over `--frontends` (failover,
//! bounded retries, `--timeout` for the whole call); [`data`] has them, byte-exact on standard
//! input and output; `keys` lists keys page by page through the same library ([`mod@keys`]).
//! The admin commands go through the controller's HTTP API (`common::proto`): [`Admin`] has
//! one method per endpoint, [`format`](mod@format) turns the answers into text, and
//! [`execute`] ties a parsed [`Cli`] to both. `--wait` is a plain poll of `GET /v1/status`
//! every [`POLL_INTERVAL`]; the controller drives the moves whether or not anyone waits, so
//! interrupting a wait (or losing the connection) changes nothing in the cluster.
//!
//! Exit codes: 0 success, 1 an error (a frontend or the controller unreachable, a change
//! refused, bad arguments) or, for `get`, a key with no value (`key not found` on standard
//! error), 2 `--wait` gave up after `--wait-timeout`.

pub mod admin;
pub mod data;
pub mod format;
pub mod keys;

pub use admin::Admin;

use clap::{Args, Parser, Subcommand};
use common::placement::NodeId;
use common::proto::{AdminOutcome, ClusterStatus};
use std::io::Write;
use std::time::Duration;

/// How often `--wait` asks the controller for progress.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

const EXAMPLES: &str = "\
Examples:
  velourfog set greeting hello                      # through 127.0.0.1:8000 (or VF_FRONTENDS)
  velourfog get greeting                            # prints hello (no newline added)
  velourfog set photo - < photo.jpg                 # the value from standard input, byte-exact
  velourfog get photo > copy.jpg
  velourfog --frontends 10.0.0.5:8000,10.0.0.6:8000 set -w all config v2
  velourfog get -r quorum greeting
  velourfog delete greeting
  velourfog keys user/                              # every key starting with user/, one per line
  velourfog keys --escaped                          # every key, percent-encoded (binary-safe)
  velourfog status                                  # members, partition health, moves
  velourfog --controller 10.0.0.5:7000 --json status
  VF_CONTROLLER=10.0.0.5:7000 velourfog status
  velourfog node add 10.0.0.9:7001                  # approve a node (controller --join manual)
  velourfog node remove 2 --wait                    # drain node 2, wait until it has left
  velourfog node remove 10.0.0.7:7001 --wait --wait-timeout 600
  velourfog replication set 2 --wait                # two replicas per partition

Exit codes: 0 done, 1 error (no frontend or controller reachable, change refused, bad
arguments) or a key not found by get, 2 --wait gave up after --wait-timeout.";

/// The command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "velourfog",
    version,
    about = "Velour Fog CLI: get, set, delete and list keys; cluster status, adding and removing storage nodes, replication.",
    after_help = EXAMPLES
)]
pub struct Cli {
    /// Frontends for get, set and delete, comma-separated (HOST:PORT or http://HOST:PORT);
    /// requests are spread over them and fail over between them. Read only by those commands
    /// (a VF_FRONTENDS meant for ./runlocal.sh, a count, does not disturb the others).
    #[arg(
        long,
        global = true,
        env = "VF_FRONTENDS",
        default_value = "127.0.0.1:8000",
        value_name = "URL,URL",
        value_parser = |s: &str| Ok::<_, String>(Frontends(s.to_owned()))
    )]
    pub frontends: Frontends,
    /// Deadline of a whole get, set or delete, or of each page of `keys`, retries included (a
    /// value of known size gets 125 ms more per MiB): seconds (`30`) or with a unit (`500ms`,
    /// `2m`).
    #[arg(long, global = true, value_name = "DURATION", default_value = "30s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// The controller's HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "VF_CONTROLLER",
        default_value = "127.0.0.1:7000",
        value_name = "HOST:PORT",
        value_parser = parse_controller
    )]
    pub controller: String,
    /// File holding the cluster secret, for the admin commands of a cluster that has one
    /// (`status` needs none).
    #[arg(long, global = true, env = "VF_CLUSTER_SECRET_FILE", value_name = "PATH")]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Machine-readable output: the controller's JSON, one object per line (with --wait: the
    /// admin outcome, one progress object per poll, then the final status).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The `--frontends` list as given; [`Frontends::endpoints`] parses it when a data command
/// needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontends(pub String);

impl Frontends {
    /// The frontends, or why the list is not one.
    pub fn endpoints(&self) -> Result<Vec<client::Endpoint>, Error> {
        let list = self.0.as_str();
        if !list.is_empty() && list.bytes().all(|b| b.is_ascii_digit()) {
            // `./runlocal.sh` reads VF_FRONTENDS as a number of frontends.
            return Err(Error::Usage(format!(
                "--frontends: `{list}` is a number, not a list of frontend addresses (HOST:PORT,HOST:PORT); \
                 is VF_FRONTENDS set for ./runlocal.sh, which reads it as a count of frontends?"
            )));
        }
        client::parse_list(list).map_err(|e| Error::Usage(format!("--frontends: {e}")))
    }
}

/// What to do.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print a key's value on standard output, byte for byte, with no newline added. A key with
    /// no value prints `key not found` on standard error and exits with 1.
    Get(data::GetArgs),
    /// Set a key to VALUE, to standard input (`-`) or to a file's contents (--file).
    Set(data::SetArgs),
    /// Delete a key (deleting a key that has no value succeeds).
    Delete(data::DeleteArgs),
    /// List the keys that start with PREFIX (every key without one), one per line, in the
    /// cluster's order (by hash, not sorted); as raw bytes, --escaped or --json.
    Keys(keys::KeysArgs),
    /// Show members, pending nodes, partition health and every partition move.
    Status,
    /// Approve or remove storage nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Change how many storage nodes hold each partition.
    #[command(subcommand)]
    Replication(ReplicationCommand),
}

/// `velourfog node ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum NodeCommand {
    /// Approve a storage node waiting to join (the controller runs with `--join manual`); it
    /// joins at its next heartbeat and partitions start moving to it.
    Add {
        /// The waiting node's HOST:PORT, as `velourfog status` lists it under pending.
        #[arg(value_name = "ADDR", value_parser = parse_addr)]
        addr: String,
    },
    /// Remove a storage node: its partitions move to the other nodes, then it leaves the
    /// cluster (it can be stopped after that).
    Remove {
        /// The node's id or its HOST:PORT, as `velourfog status` lists them.
        #[arg(value_name = "NODE", value_parser = parse_node)]
        node: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `velourfog replication ...`.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ReplicationCommand {
    /// Set the replication factor K: every partition moves to K replicas (1 <= K <= the
    /// number of storage nodes not leaving).
    Set {
        /// The new number of replicas per partition.
        #[arg(value_name = "K", value_parser = parse_replication)]
        k: usize,
        #[command(flatten)]
        wait: WaitArgs,
    },
}

/// `--wait` and its deadline.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct WaitArgs {
    /// Wait until every partition has moved (and, for `node remove`, the node has left the
    /// cluster), printing progress every 500 ms.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this long, with exit code 2: seconds (`600`) or with a unit
    /// (`90s`, `10m`, `2h`). The change itself goes on.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "3600",
        value_parser = parse_duration,
        requires = "wait"
    )]
    pub wait_timeout: Duration,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A get, set or delete failed (the client's one-line reason).
    #[error(transparent)]
    Client(#[from] client::Error),
    /// `get` found no value.
    #[error("key not found")]
    NotFound,
    /// A value's file or standard input could not be read.
    #[error("cannot read {what}: {cause}")]
    Input { what: String, cause: std::io::Error },
    /// Arguments that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),
    /// No answer: connection refused or broken, or no answer within the request timeout.
    #[error("cannot reach the controller at {controller}: {cause}")]
    Unreachable { controller: String, cause: String },
    /// The controller answered with a status other than 200; `message` is its explanation.
    #[error("{}", refusal(*status, message))]
    Refused { status: u16, message: String },
    /// A 2xx answer that is not the JSON expected (another service at that address?).
    #[error("unexpected answer from the controller at {controller}: {cause}")]
    Unexpected { controller: String, cause: String },
    /// `--wait` reached `--wait-timeout`; `progress` is where the change stood.
    #[error("gave up waiting after {}: {progress}", format::human_duration(waited.as_secs_f64()))]
    WaitTimeout { waited: Duration, progress: String },
    /// Standard output failed (or was closed, as by `| head`).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The Tokio runtime could not be built.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// `--cluster-secret-file` names a file that cannot be used.
    #[error(transparent)]
    Secret(#[from] common::auth::SecretError),
}

/// The controller's explanation of a refusal, or its status if it gave none.
fn refusal(status: u16, message: &str) -> String {
    if message.is_empty() {
        format!("the controller answered {status}")
    } else {
        message.to_owned()
    }
}

impl Error {
    /// The process exit code for this error: 2 for a wait that gave up, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::WaitTimeout { .. } => 2,
            _ => 1,
        }
    }
}

/// Runs `cli` on a current-thread runtime, writing to standard output.
pub fn run(cli: &Cli) -> Result<(), Error> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    runtime.block_on(execute(cli, &mut out, POLL_INTERVAL))
}

/// Runs `cli`, writing its output to `out`; `--wait` polls every `poll`.
pub async fn execute(cli: &Cli, out: &mut dyn Write, poll: Duration) -> Result<(), Error> {
    let secret =
        cli.cluster_secret_file.as_deref().map(common::auth::ClusterSecret::from_file).transpose()?;
    let admin = Admin::new(&cli.controller, secret.as_ref());
    let json = cli.json;
    let output = data::Output { json, terminal: std::io::IsTerminal::is_terminal(&std::io::stderr()) };
    match &cli.command {
        Command::Get(args) => data::get(&data_client(cli)?, args, output, out).await?,
        Command::Set(args) => data::set(&data_client(cli)?, args, output, out).await?,
        Command::Delete(args) => data::delete(&data_client(cli)?, args, output, out).await?,
        Command::Keys(args) => keys::keys(&data_client(cli)?, args, json, out).await?,
        Command::Status => {
            let status = admin.status().await?;
            if json {
                write_json(out, &status)?;
            } else {
                write!(out, "{}", format::format_status(&status))?;
            }
        }
        Command::Node(NodeCommand::Add { addr }) => write_outcome(out, json, &admin.add(addr).await?)?,
        Command::Node(NodeCommand::Remove { node, wait }) => {
            let outcome = admin.remove(node).await?;
            write_outcome(out, json, &outcome)?;
            if wait.wait {
                let id = outcome.node_id.or_else(|| node.parse().ok());
                let status = settle(&admin, out, json, id, wait.wait_timeout, poll).await?;
                let name = id.map_or_else(|| node.clone(), |id| id.to_string());
                finish(out, json, &status, &format!("node {name} has left the cluster"))?;
            }
        }
        Command::Replication(ReplicationCommand::Set { k, wait }) => {
            write_outcome(out, json, &admin.set_replication(*k).await?)?;
            if wait.wait {
                let status = settle(&admin, out, json, None, wait.wait_timeout, poll).await?;
                finish(out, json, &status, &format!("every partition has {k} replicas"))?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

/// The client of `--frontends` for the data commands, with `--timeout` as its deadline.
fn data_client(cli: &Cli) -> Result<client::Client, Error> {
    let frontends = cli.frontends.endpoints()?.iter().map(ToString::to_string).collect::<Vec<_>>();
    let builder =
        client::Client::builder(frontends).map_err(|e| Error::Usage(format!("--frontends: {e}")))?;
    Ok(builder.deadline(cli.timeout).build())
}

/// Polls the status every `poll` until no move is left and `leaving` (if any) is no longer a
/// member, printing each new progress line; gives up after `timeout`. Returns the final status.
pub async fn settle(
    admin: &Admin,
    out: &mut dyn Write,
    json: bool,
    leaving: Option<NodeId>,
    timeout: Duration,
    poll: Duration,
) -> Result<ClusterStatus, Error> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    loop {
        // A controller restarting meanwhile (the moves resume when it is back) is waited for.
        let status = match admin.status().await {
            Ok(status) => status,
            Err(Error::Unreachable { .. } | Error::Refused { status: 503, .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(poll).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let progress = format::progress(&status, leaving);
        let line = if json {
            serde_json::to_string(&progress).expect("progress encodes")
        } else {
            format::format_progress(&progress)
        };
        if line != last_line {
            writeln!(out, "{line}")?;
            out.flush()?;
            last_line = line;
        }
        if progress.is_done() {
            return Ok(status);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(Error::WaitTimeout { waited: timeout, progress: format::format_progress(&progress) });
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

fn write_outcome(out: &mut dyn Write, json: bool, outcome: &AdminOutcome) -> Result<(), Error> {
    if json {
        write_json(out, outcome)
    } else {
        writeln!(out, "{}", outcome.message)?;
        Ok(())
    }
}

/// The end of a wait: the final status as JSON, or `message` for people.
fn finish(out: &mut dyn Write, json: bool, status: &ClusterStatus, message: &str) -> Result<(), Error> {
    if json {
        write_json(out, status)
    } else {
        writeln!(out, "{message}")?;
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(out: &mut dyn Write, value: &T) -> Result<(), Error> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// Accepts `HOST:PORT`, also written as `http://HOST:PORT/`.
fn parse_controller(s: &str) -> Result<String, String> {
    let addr = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    parse_addr(addr)
}

fn parse_addr(s: &str) -> Result<String, String> {
    common::addr::split(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// A node id or a `HOST:PORT`.
fn parse_node(s: &str) -> Result<String, String> {
    if s.parse::<NodeId>().is_ok() || common::addr::split(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is neither a node id (such as 2) nor HOST:PORT (such as 10.0.0.7:7001)"))
    }
}

fn parse_replication(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("K must be at least 1".to_owned()),
        Ok(k) => Ok(k),
        Err(_) => Err(format!("`{s}` is not a number of replicas (a whole number, at least 1)")),
    }
}

/// Seconds (`600`), or a duration with units (`90s`, `10m`, `2h`, `1h 30m`, `500ms`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let duration = match s.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => humantime::parse_duration(s)
            .map_err(|_| format!("`{s}` is not a duration (seconds such as 600, or 500ms, 90s, 10m, 2h)"))?,
    };
    Ok(duration)
}

/// A [`parse_duration`] that is not zero.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        Duration::ZERO => Err("the timeout must be more than 0".to_owned()),
        timeout => Ok(timeout),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use client::Level;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("velourfog").chain(args.iter().copied()))
    }

    fn waiting(timeout: u64) -> WaitArgs {
        WaitArgs { wait: true, wait_timeout: Duration::from_secs(timeout) }
    }

    fn keys_command(prefix: Option<&str>, hex_prefix: bool, escaped: bool, page_size: u16) -> Command {
        Command::Keys(keys::KeysArgs { prefix: prefix.map(Into::into), hex_prefix, escaped, page_size })
    }

    const NO_WAIT: WaitArgs = WaitArgs { wait: false, wait_timeout: Duration::from_secs(3600) };

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_command_parses() {
        let remove = |node: &str, wait| Command::Node(NodeCommand::Remove { node: node.to_owned(), wait });
        let key = |key: &str, hex_key| data::KeyArgs { key: key.into(), hex_key };
        let get = |k, read_level| Command::Get(data::GetArgs { key: key(k, false), read_level });
        let set = |value: Option<&str>, file: Option<&str>, write_level| {
            let (value, file) = (value.map(Into::into), file.map(Into::into));
            Command::Set(data::SetArgs { key: key("k", false), value, file, write_level })
        };
        let cases: Vec<(&[&str], Command)> = vec![
            (&["get", "greeting"], get("greeting", None)),
            (&["get", "-r", "quorum", "greeting"], get("greeting", Some(Level::Quorum))),
            (
                &["get", "--hex-key", "00ff", "--read-level", "all"],
                Command::Get(data::GetArgs { key: key("00ff", true), read_level: Some(Level::All) }),
            ),
            (&["set", "k", "v"], set(Some("v"), None, None)),
            (&["set", "k", "v", "-w", "all"], set(Some("v"), None, Some(Level::All))),
            (&["set", "k", "-"], set(Some("-"), None, None)),
            (&["set", "k", "--", "-v"], set(Some("-v"), None, None)),
            (
                &["set", "--file", "photo.jpg", "k", "--write-level", "one"],
                set(None, Some("photo.jpg"), Some(Level::One)),
            ),
            (
                &["delete", "k", "-w", "quorum"],
                Command::Delete(data::DeleteArgs { key: key("k", false), write_level: Some(Level::Quorum) }),
            ),
            (&["keys"], keys_command(None, false, false, 1000)),
            (&["keys", "user/", "--page-size", "333"], keys_command(Some("user/"), false, false, 333)),
            (&["keys", "--hex-prefix", "00ff", "--escaped"], keys_command(Some("00ff"), true, true, 1000)),
            (&["status"], Command::Status),
            (
                &["node", "add", "10.0.0.9:7001"],
                Command::Node(NodeCommand::Add { addr: "10.0.0.9:7001".to_owned() }),
            ),
            (&["node", "remove", "2"], remove("2", NO_WAIT)),
            (&["node", "remove", "[::1]:7001", "--wait"], remove("[::1]:7001", waiting(3600))),
            (&["node", "remove", "2", "--wait", "--wait-timeout", "600"], remove("2", waiting(600))),
            (&["node", "remove", "2", "--wait", "--wait-timeout", "10m"], remove("2", waiting(600))),
            (&["node", "remove", "2", "--wait", "--wait-timeout", "1h 30m"], remove("2", waiting(5400))),
            (
                &["replication", "set", "3"],
                Command::Replication(ReplicationCommand::Set { k: 3, wait: NO_WAIT }),
            ),
            (
                &["replication", "set", "2", "--wait", "--wait-timeout", "2h"],
                Command::Replication(ReplicationCommand::Set { k: 2, wait: waiting(7200) }),
            ),
        ];
        for (args, expected) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(cli.command, expected, "{args:?}");
            assert!(!cli.json);
        }
    }

    /// The only test that reads or sets VF_CONTROLLER and VF_FRONTENDS, so tests running in
    /// parallel do not race.
    #[test]
    fn addresses_come_from_the_flag_then_the_environment_then_the_default() {
        let frontends =
            |cli: Cli| cli.frontends.endpoints().unwrap().iter().map(ToString::to_string).collect::<Vec<_>>();
        std::env::remove_var("VF_FRONTENDS");
        assert_eq!(frontends(parse(&["get", "k"]).unwrap()), ["http://127.0.0.1:8000"]);
        std::env::set_var("VF_FRONTENDS", "a:1, http://b:2/");
        assert_eq!(frontends(parse(&["get", "k"]).unwrap()), ["http://a:1", "http://b:2"]);
        assert_eq!(frontends(parse(&["get", "k", "--frontends", "c:3"]).unwrap()), ["http://c:3"]);
        std::env::remove_var("VF_FRONTENDS");
        std::env::remove_var("VF_CONTROLLER");
        assert_eq!(parse(&["status"]).unwrap().controller, "127.0.0.1:7000");
        std::env::set_var("VF_CONTROLLER", "10.0.0.5:7000");
        assert_eq!(parse(&["status"]).unwrap().controller, "10.0.0.5:7000");
        let cli = parse(&["--controller", "http://ctl:7100/", "status"]).unwrap();
        assert_eq!(cli.controller, "ctl:7100");
        // Global flags go before or after the command.
        let cli = parse(&["node", "remove", "3", "--json", "--controller", "ctl:7200"]).unwrap();
        assert_eq!((cli.controller.as_str(), cli.json), ("ctl:7200", true));
        std::env::remove_var("VF_CONTROLLER");
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let cases: &[(&[&str], &str)] = &[
            (&["replication", "set", "0"], "K must be at least 1"),
            (&["replication", "set", "-1"], "unexpected argument"),
            (&["replication", "set", "three"], "`three` is not a number of replicas"),
            (&["replication", "set", "2.5"], "`2.5` is not a number of replicas"),
            (&["replication", "set"], "<K>"),
            (&["node", "add", "10.0.0.9"], "`10.0.0.9` is not HOST:PORT"),
            (&["node", "remove", "node-two"], "`node-two` is neither a node id"),
            (&["node", "remove", "2", "--wait-timeout", "60"], "--wait"),
            (&["node", "remove", "2", "--wait", "--wait-timeout", "soon"], "`soon` is not a duration"),
            (&["node", "remove", "2", "--wait", "--wait-timeout", "5 fortnights"], "is not a duration"),
            (&["get", "k", "--timeout", "0"], "the timeout must be more than 0"),
            (&["get", "k", "-r", "most"], "`most` is not a consistency level"),
            (&["set", "k"], "<VALUE>"),
            (&["set", "k", "v", "--file", "f"], "cannot be used with"),
            (&["delete"], "<KEY>"),
            (&["keys", "--page-size", "0"], "0 is not in 1..=10000"),
            (&["keys", "--page-size", "10001"], "10001 is not in 1..=10000"),
            (&["keys", "--hex-prefix"], "<PREFIX>"),
            (&["--controller", "ctl", "status"], "`ctl` is not HOST:PORT"),
            (&["frobnicate"], "unrecognized subcommand"),
            (&[], "Usage"),
        ];
        for &(args, reason) in cases {
            let error = parse(args).expect_err(&format!("{args:?} should fail")).to_string();
            assert!(error.contains(reason), "{args:?}: {error}");
        }
    }

    #[test]
    fn a_bad_frontend_list_troubles_only_the_data_commands() {
        let cases = [
            ("fe", "--frontends: `fe` is not a frontend address"),
            ("", "--frontends: `` is not a frontend address: the list is empty"),
            ("3", "--frontends: `3` is a number, not a list of frontend addresses"),
        ];
        for (list, reason) in cases {
            let error = Frontends(list.to_owned()).endpoints().unwrap_err().to_string();
            assert!(error.starts_with(reason), "{list:?}: {error}");
            assert!(parse(&["--frontends", list, "status"]).is_ok(), "{list:?}");
            let cli = parse(&["--frontends", list, "get", "k"]).unwrap();
            assert!(data_client(&cli).is_err(), "{list:?}");
        }
    }

    #[test]
    fn help_documents_every_command_and_flag() {
        let top = Cli::command().render_long_help().to_string();
        for word in [
            "get",
            "set",
            "delete",
            "keys",
            "--frontends",
            "VF_FRONTENDS",
            "--timeout",
            "status",
            "node",
            "replication",
            "--controller",
            "VF_CONTROLLER",
            "--json",
            "Examples:",
            "Exit codes",
        ] {
            assert!(top.contains(word), "top-level help lacks {word}:\n{top}");
        }
        let mut cli = Cli::command();
        cli.build(); // propagates the global flags to the subcommands
        let remove = cli.find_subcommand_mut("node").unwrap().find_subcommand_mut("remove").unwrap();
        let help = remove.render_long_help().to_string();
        for word in ["NODE", "--wait", "--wait-timeout", "--controller", "--json"] {
            assert!(help.contains(word), "node remove help lacks {word}:\n{help}");
        }
    }

    #[test]
    fn only_a_wait_that_gave_up_exits_with_2() {
        let timeout =
            Error::WaitTimeout { waited: Duration::from_secs(600), progress: "3 moves left".to_owned() };
        assert_eq!(timeout.exit_code(), 2);
        assert_eq!(timeout.to_string(), "gave up waiting after 10 min 00 s: 3 moves left");
        let refused = Error::Refused { status: 409, message: "lower the replication first".to_owned() };
        assert_eq!((refused.exit_code(), refused.to_string().as_str()), (1, "lower the replication first"));
        assert_eq!(
            Error::Refused { status: 502, message: String::new() }.to_string(),
            "the controller answered 502"
        );
    }
}
