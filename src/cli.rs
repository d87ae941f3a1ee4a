//! The `ccu` command line: `serve` (the default), `migrate`, `user add`.

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
        .collect()
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

pub async fn migrate(settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir)?;
    let store = Store::connect(&settings.database_url).await?;
    store.migrate().await?;
    sync_config(&settings, &store).await?;
    println!("migrations applied ({})", store.backend());
    Ok(())
}

pub async fn user_add(settings: Settings, action: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add {
        username,
        role,
        organization,
        display_name,
        skills,
        languages,
        password_stdin: _,
    } = action;
    let mut password = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut password)
        .context("reading the password from standard input")?;
    let password = password.trim_end_matches(['\r', '\n']).to_owned();
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
    std::fs::create_dir_all(&settings.data_dir)?;
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
