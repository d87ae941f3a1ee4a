//! The `ccu` command line: `serve` (the default), `migrate`, `user add`,
//! `user passwd`, `user sip`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::api::users::{validate_password, validate_profile, validate_username};
use crate::app::{Application, sync_config};
use crate::config::Settings;
use crate::store::{NewUser, Role, Store};

#[derive(Debug, Parser)]
#[command(
    name = "ccu",
    version,
    about = "Contact Center Unico: omnichannel contact center for a public administration"
)]
pub struct Cli {
    /// Configuration file (default: config/default.toml). `CCU_...` variables override its keys.
    #[arg(long, global = true, env = "CCU_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Manage users.
    User {
        #[command(subcommand)]
        action: UserCommand,
    },
    /// Run the real routing engine in virtual time (Poisson arrivals,
    /// exponential handle times and patience) and print JSON figures next to
    /// the Erlang C/A prediction.
    Simulate(SimulateArgs),
    /// Erlang C/A closed form: the figures for a staffing, or the staffing
    /// needed for a service-level goal. Prints JSON.
    Erlang(ErlangArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    #[arg(long, default_value_t = 14)]
    pub operators: u32,
    #[arg(long, default_value_t = 200.0)]
    pub arrivals_per_hour: f64,
    #[arg(long, default_value_t = 180.0)]
    pub aht_seconds: f64,
    /// Service-level target; with --queue, that queue's target is the default.
    #[arg(long)]
    pub target_seconds: Option<f64>,
    #[arg(long, default_value_t = 8.0)]
    pub hours: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Mean patience of waiting callers (Erlang A); omitted: nobody hangs up.
    #[arg(long)]
    pub patience_seconds: Option<f64>,
    /// longest-idle, best-skill, least-busy, round-robin or ring-all; with
    /// --queue, that queue's strategy is the default.
    #[arg(long, value_parser = parse_strategy)]
    pub strategy: Option<ccu_routing::Strategy>,
    /// Take strategy and target from this queue of the configuration (--config).
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long, default_value_t = 0.5)]
    pub warmup_hours: f64,
    #[arg(long, default_value_t = 20)]
    pub batches: u32,
}

#[derive(Debug, clap::Args)]
pub struct ErlangArgs {
    #[arg(long)]
    pub arrivals_per_hour: f64,
    #[arg(long)]
    pub aht_seconds: f64,
    #[arg(long, default_value_t = 20.0)]
    pub target_seconds: f64,
    /// The figures for this many operators...
    #[arg(long, conflicts_with = "service_level")]
    pub operators: Option<u32>,
    /// ...or the fewest operators reaching this service level (0-1), e.g. 0.8.
    #[arg(long)]
    pub service_level: Option<f64>,
    /// Mean patience (Erlang A).
    #[arg(long)]
    pub patience_seconds: Option<f64>,
}

fn parse_strategy(text: &str) -> Result<ccu_routing::Strategy, String> {
    serde_json::from_value(serde_json::Value::String(text.to_owned())).map_err(|_| {
        format!("{text:?}: longest-idle, best-skill, least-busy, round-robin or ring-all")
    })
}

/// `ccu simulate`: settings are needed only to read a queue's defaults.
pub fn simulate(args: SimulateArgs, settings: Option<&Settings>) -> anyhow::Result<String> {
    let queue = match (&args.queue, settings) {
        (Some(id), Some(settings)) => Some(
            settings
                .queues
                .get(id)
                .ok_or_else(|| anyhow::anyhow!("--queue: unknown queue {id:?}"))?,
        ),
        (Some(_), None) => bail!("--queue needs a valid configuration"),
        (None, _) => None,
    };
    let params = ccu_routing::sim::SimParams {
        operators: args.operators,
        arrivals_per_hour: args.arrivals_per_hour,
        aht_seconds: args.aht_seconds,
        target_seconds: args
            .target_seconds
            .or(queue.map(|q| f64::from(q.service_level.target_seconds)))
            .unwrap_or(20.0),
        hours: args.hours,
        seed: args.seed,
        patience_seconds: args.patience_seconds,
        strategy: args
            .strategy
            .or(queue.map(|q| q.strategy))
            .unwrap_or_default(),
        warmup_hours: args.warmup_hours,
        batches: args.batches,
    };
    let report = ccu_routing::sim::simulate(&params)?;
    Ok(serde_json::to_string_pretty(
        &serde_json::json!({ "params": params, "report": report }),
    )?)
}

/// `ccu erlang`.
pub fn erlang(args: ErlangArgs) -> anyhow::Result<String> {
    use ccu_routing::erlang::{QueueModel, metrics, staffing};
    let model = QueueModel {
        arrivals_per_hour: args.arrivals_per_hour,
        aht_secs: args.aht_seconds,
        target_secs: args.target_seconds,
        operators: args.operators.unwrap_or(1),
        patience_secs: args.patience_seconds,
    };
    let figures = match (args.operators, args.service_level) {
        (Some(_), _) => metrics(&model)?,
        (None, Some(goal)) => staffing(&model, goal)?,
        (None, None) => bail!("give --operators N or --service-level GOAL"),
    };
    Ok(serde_json::to_string_pretty(&figures)?)
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user; the password is read from standard input.
    Add {
        #[arg(long)]
        username: String,
        /// operator, supervisor or admin.
        #[arg(long)]
        role: Role,
        /// Organization id from the config (default: the city).
        #[arg(long)]
        organization: Option<String>,
        #[arg(long)]
        display_name: Option<String>,
        /// Skills with levels, e.g. anagrafe:8,tributi:5
        #[arg(long, value_parser = parse_skills)]
        skills: Option<BTreeMap<String, u8>>,
        /// Languages, e.g. it,en
        #[arg(long, value_delimiter = ',')]
        languages: Option<Vec<String>>,
        /// Read the password from standard input (required: never on the command line).
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Set a user's password (read from standard input) and end their
    /// sessions: the way back in when the only admin lost the password.
    Passwd {
        #[arg(long)]
        username: String,
        #[arg(long, required = true)]
        password_stdin: bool,
    },
    /// Give a user a SIP account for their phones (the password is read
    /// from standard input), or take it away with --remove.
    Sip {
        /// The ccu user.
        #[arg(long)]
        username: String,
        /// What the phone registers as, e.g. 1001.
        #[arg(long, required_unless_present = "remove")]
        sip_username: Option<String>,
        #[arg(long, required_unless_present = "remove")]
        password_stdin: bool,
        /// Remove the user's SIP account.
        #[arg(long, conflicts_with_all = ["sip_username", "password_stdin"])]
        remove: bool,
    },
}

fn parse_skills(text: &str) -> Result<BTreeMap<String, u8>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| {
            let (skill, level) = pair
                .split_once(':')
                .ok_or_else(|| format!("{pair:?}: expected skill:level"))?;
            let level: u8 = level
                .trim()
                .parse()
                .map_err(|_| format!("{pair:?}: the level must be a number from 1 to 10"))?;
            Ok((skill.trim().to_owned(), level))
        })
        .try_fold(
            BTreeMap::new(),
            |mut skills, pair: Result<(String, u8), String>| {
                let (skill, level) = pair?;
                if skills.insert(skill.clone(), level).is_some() {
                    return Err(format!("skill {skill:?} is given twice"));
                }
                Ok(skills)
            },
        )
}

/// Creates the data directory readable only by its owner: it holds the
/// database (password hashes, citizens' data) and the first admin password.
pub fn create_data_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Once the first admin has a password of their own, the generated one is
/// removed from disk.
pub fn forget_initial_password(settings: &Settings, username: &str) {
    if username == "admin" {
        let path = crate::app::initial_password_path(settings);
        if path.exists() && std::fs::remove_file(&path).is_ok() {
            tracing::info!(path = %path.display(), "removed the initial admin password file");
        }
    }
}

/// Reads a password from standard input: the first line, without its end.
fn read_password() -> anyhow::Result<String> {
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .context("reading the password from standard input")?;
    Ok(input.lines().next().unwrap_or_default().to_owned())
}

pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let app = Application::build(settings, shutdown.clone()).await?;
    tokio::spawn(async move {
        wait_for_signal().await;
        shutdown.cancel();
    });
    app.run().await
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; ctrl-c only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => tracing::info!("ctrl-c received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn user_passwd(settings: Settings, username: String) -> anyhow::Result<()> {
    let password = read_password()?;
    if let Err(err) = validate_password(&settings, &password) {
        bail!("{err}");
    }
    let store = Store::connect(&settings.database_url).await?;
    store.migrate().await?;
    let Some((user, _)) = store.user_for_login(&username).await? else {
        bail!("username: no user {username:?}");
    };
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password)).await??;
    let changes = crate::store::UserChanges {
        password_hash: Some(hash),
        ..Default::default()
    };
    store
        .update_user(user.id, &changes, crate::now_ms())
        .await?;
    forget_initial_password(&settings, &user.username);
    println!(
        "password of {} changed; their sessions ended",
        user.username
    );
    Ok(())
}

/// `ccu user sip`: the same checks and audit entry as the API. A running
/// server forgets the user's registered devices at their next refresh
/// (the API forgets them at once).
async fn user_sip(
    settings: Settings,
    username: String,
    sip_username: Option<String>,
    remove: bool,
) -> anyhow::Result<()> {
    let password = match (&sip_username, remove) {
        (Some(sip_username), false) => {
            let password = read_password()?;
            let checks = crate::api::sip::validate_sip_username(sip_username)
                .and_then(|_| validate_password(&settings, &password));
            if let Err(err) = checks {
                bail!("{err}");
            }
            Some(password)
        }
        _ => None,
    };
    let store = Store::connect(&settings.database_url).await?;
    store.migrate().await?;
    let Some((user, _)) = store.user_for_login(&username).await? else {
        bail!("username: no user {username:?}");
    };
    let now = crate::now_ms();
    let (action, detail) = match (sip_username, password) {
        (Some(sip_username), Some(password)) => {
            let realm = &settings.sip.registrar.realm;
            match store
                .set_sip_account(user.id, &sip_username, realm, &password, now)
                .await
            {
                Err(crate::store::StoreError::Conflict(_)) => {
                    bail!("sip-username: {sip_username:?} belongs to another user")
                }
                other => other?,
            };
            println!(
                "{} registers as {sip_username} in realm {realm}",
                user.username
            );
            (
                "sip_account_set",
                serde_json::json!({ "sip_username": sip_username, "realm": realm, "via": "cli" }),
            )
        }
        _ => {
            if !store.delete_sip_account(user.id).await? {
                bail!("{} has no SIP account", user.username);
            }
            println!("{} has no SIP account any more", user.username);
            ("sip_account_removed", serde_json::json!({ "via": "cli" }))
        }
    };
    store
        .audit(
            &crate::store::AuditEntry {
                actor_user_id: None,
                address: None,
                action,
                target: Some(user.username),
                detail,
            },
            now,
        )
        .await?;
    Ok(())
}

pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    create_data_dir(&settings.data_dir)?;
    let store = Store::connect(&settings.database_url).await?;
    store.migrate().await?;
    sync_config(&settings, &store).await?;
    println!("migrations applied ({})", store.backend());
    Ok(())
}

pub async fn user(settings: Settings, action: UserCommand) -> anyhow::Result<()> {
    let (username, role, organization, display_name, skills, languages) = match action {
        UserCommand::Passwd { username, .. } => return user_passwd(settings, username).await,
        UserCommand::Sip {
            username,
            sip_username,
            remove,
            ..
        } => return user_sip(settings, username, sip_username, remove).await,
        UserCommand::Add {
            username,
            role,
            organization,
            display_name,
            skills,
            languages,
            password_stdin: _,
        } => (
            username,
            role,
            organization,
            display_name,
            skills,
            languages,
        ),
    };
    let password = read_password()?;
    if let Some(name) = &display_name
        && let Err(err) = crate::api::users::validate_display_name(name)
    {
        bail!("{err}");
    }
    let organization = organization.unwrap_or_else(|| settings.city_organization().to_owned());
    let skills = skills.unwrap_or_default();
    let languages = languages.unwrap_or_else(|| vec!["it".into()]);
    let checks = validate_username(&username)
        .and_then(|_| validate_password(&settings, &password))
        .and_then(|_| validate_profile(&settings, &skills, &languages, &BTreeMap::new(), &[]));
    if let Err(err) = checks {
        bail!("{err}");
    }
    if !settings.organizations.contains_key(&organization) {
        bail!("organization: unknown organization {organization:?}");
    }
    create_data_dir(&settings.data_dir)?;
    let store = Store::connect(&settings.database_url).await?;
    store.migrate().await?;
    sync_config(&settings, &store).await?;
    let hash = tokio::task::spawn_blocking(move || crate::auth::hash_password(&password)).await??;
    let user = store
        .create_user(
            &NewUser {
                display_name: display_name.unwrap_or_else(|| username.clone()),
                username,
                password_hash: hash,
                role,
                organization_id: organization,
                grants: Vec::new(),
                skills,
                languages,
                capacity: BTreeMap::new(),
            },
            crate::now_ms(),
        )
        .await?;
    println!(
        "created {} {} (id {}) in {}",
        user.role.as_str(),
        user.username,
        user.id,
        user.organization_id
    );
    Ok(())
}
