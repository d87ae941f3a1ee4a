//! The store: everything ccu must not forget, on SQLite (the embedded
//! default) or PostgreSQL (scale-out).
//!
//! One interface, two implementations: [`Store`] holds either pool and every
//! method runs the same SQL text on whichever backend is configured (the
//! schemas under `migrations/sqlite` and `migrations/postgres` are kept
//! column-for-column identical, `$n` placeholders work on both, and
//! timestamps are Unix milliseconds so no date type differs between them).
//! Where the dialects would differ the method says so. An enum rather than a
//! trait object keeps every query monomorphic and avoids boxing futures on
//! the hot path; the test suite runs against both backends.
//!
//! Scoping by organization is enforced here, in the queries, not in the
//! handlers: every read of conversations and users takes a [`Scope`].

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, FromRow, SqlSafeStr};
use utoipa::ToSchema;

use crate::config::Channel;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Debug)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A handle to the store; cheap to clone (it wraps a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    db: Db,
}

/// Runs `$body` with `$pool` bound to whichever pool the store has. The body
/// is compiled once per backend, so it must only use SQL both understand.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match &$store.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// A value bound to a query whose text is built at run time (scope filters).
#[derive(Debug, Clone)]
enum Arg {
    Int(i64),
    Text(String),
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Int(v) => query.bind(*v),
                Arg::Text(v) => query.bind(v.clone()),
            };
        }
        query
    }};
}

mod chat;
pub use chat::{Contact, OpenOffer};

pub mod mail; // e-mail channel (issue 6)

pub mod sip; // voice channel (issue 5)
pub mod voicemail; // voice messages (issue 5)

fn migrations(backend: &str) -> Vec<Migration> {
    let files: &[(i64, &str, &str)] = match backend {
        "sqlite" => &[
            (
                1,
                "foundation",
                include_str!("../../migrations/sqlite/0001_foundation.sql"),
            ),
            (
                2,
                "presence",
                include_str!("../../migrations/sqlite/0002_presence.sql"),
            ),
            (
                3,
                "mail",
                include_str!("../../migrations/sqlite/0003_mail.sql"),
            ),
            (
                4,
                "chat",
                include_str!("../../migrations/sqlite/0004_chat.sql"),
            ),
            (
                5,
                "sip",
                include_str!("../../migrations/sqlite/0005_sip.sql"),
            ), // voice (issue 5)
            (
                6,
                "voicemail",
                include_str!("../../migrations/sqlite/0006_voicemail.sql"),
            ),
        ],
        _ => &[
            (
                1,
                "foundation",
                include_str!("../../migrations/postgres/0001_foundation.sql"),
            ),
            (
                2,
                "presence",
                include_str!("../../migrations/postgres/0002_presence.sql"),
            ),
            (
                3,
                "mail",
                include_str!("../../migrations/postgres/0003_mail.sql"),
            ),
            (
                4,
                "chat",
                include_str!("../../migrations/postgres/0004_chat.sql"),
            ),
            (
                5,
                "sip",
                include_str!("../../migrations/postgres/0005_sip.sql"),
            ), // voice (issue 5)
            (
                6,
                "voicemail",
                include_str!("../../migrations/postgres/0006_voicemail.sql"),
            ),
        ],
    };
    files
        .iter()
        .map(|&(version, description, sql)| {
            Migration::new(
                version,
                description.into(),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Operator,
    Supervisor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "operator" => Ok(Role::Operator),
            "supervisor" => Ok(Role::Supervisor),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role {other:?}: operator, supervisor or admin"
            )),
        }
    }
}

/// A user of the consoles: operator, supervisor or admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub role: Role,
    pub organization_id: String,
    /// Other organizations this user may see.
    pub grants: Vec<String>,
    /// Skill id -> level 1-10.
    pub skills: BTreeMap<String, u8>,
    pub languages: Vec<String>,
    /// Channel -> simultaneous conversations, overriding the defaults.
    pub capacity: BTreeMap<String, u32>,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(FromRow)]
struct UserRow {
    id: i64,
    username: String,
    display_name: String,
    role: String,
    organization_id: String,
    languages: String,
    capacity: String,
    active: bool,
    created_at: i64,
    updated_at: i64,
}

/// (user id, skill, level)
type SkillRow = (i64, String, i32);
/// (user id, organization id)
type GrantRow = (i64, String);

const USER_COLUMNS: &str = "id, username, display_name, role, organization_id, languages, capacity, active, created_at, updated_at";

impl UserRow {
    fn into_user(self, skills: BTreeMap<String, u8>, grants: Vec<String>) -> Result<User> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("user {}: {what}", self.id));
        Ok(User {
            role: self.role.parse().map_err(|_| corrupt("role"))?,
            languages: serde_json::from_str(&self.languages).map_err(|_| corrupt("languages"))?,
            capacity: serde_json::from_str(&self.capacity).map_err(|_| corrupt("capacity"))?,
            id: self.id,
            username: self.username,
            display_name: self.display_name,
            organization_id: self.organization_id,
            grants,
            skills,
            active: self.active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// What a new user is made of; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub role: Role,
    pub organization_id: String,
    pub grants: Vec<String>,
    pub skills: BTreeMap<String, u8>,
    pub languages: Vec<String>,
    pub capacity: BTreeMap<String, u32>,
}

/// A partial update of a user; `None` leaves the field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub display_name: Option<String>,
    pub password_hash: Option<String>,
    pub role: Option<Role>,
    pub grants: Option<Vec<String>>,
    pub skills: Option<BTreeMap<String, u8>>,
    pub languages: Option<Vec<String>>,
    pub capacity: Option<BTreeMap<String, u32>>,
    pub active: Option<bool>,
}

/// Which organizations' data a reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The city's supervisors and admins.
    All,
    /// Their own organization plus grants; operators also see whatever is
    /// assigned to them (a city generalist handling a company's overflow).
    Organizations {
        organizations: Vec<String>,
        assigned_to: Option<i64>,
    },
}

impl Scope {
    /// ` AND (<org column> IN (...) [OR <operator column> = ...])` and its binds.
    fn filter(
        &self,
        org_column: &str,
        operator_column: Option<&str>,
        args: &mut Vec<Arg>,
    ) -> String {
        match self {
            Scope::All => String::new(),
            Scope::Organizations {
                organizations,
                assigned_to,
            } => {
                let mut alternatives = Vec::new();
                if !organizations.is_empty() {
                    let marks: Vec<String> = organizations
                        .iter()
                        .map(|org| {
                            args.push(Arg::Text(org.clone()));
                            format!("${}", args.len())
                        })
                        .collect();
                    alternatives.push(format!("{org_column} IN ({})", marks.join(", ")));
                }
                if let (Some(operator), Some(column)) = (assigned_to, operator_column) {
                    args.push(Arg::Int(*operator));
                    alternatives.push(format!("{column} = ${}", args.len()));
                }
                if alternatives.is_empty() {
                    " AND 1 = 0".to_owned()
                } else {
                    format!(" AND ({})", alternatives.join(" OR "))
                }
            }
        }
    }

    pub fn allows_organization(&self, organization: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Organizations { organizations, .. } => {
                organizations.iter().any(|o| o == organization)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    Queued,
    Offered,
    Assigned,
    WrapUp,
    Closed,
    Abandoned,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Offered => "offered",
            Self::Assigned => "assigned",
            Self::WrapUp => "wrap_up",
            Self::Closed => "closed",
            Self::Abandoned => "abandoned",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Offered,
            Self::Assigned,
            Self::WrapUp,
            Self::Closed,
            Self::Abandoned,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Conversation {
    pub id: i64,
    /// The human reference citizens quote, e.g. `URP-2026-000123`.
    pub reference: String,
    pub organization_id: String,
    pub queue_id: String,
    #[schema(value_type = String, example = "chat")]
    pub channel: Channel,
    pub state: ConversationState,
    pub contact_id: Option<i64>,
    pub operator_id: Option<i64>,
    pub language: String,
    pub subject: Option<String>,
    pub created_at: i64,
    /// When it first entered a queue; overflow and transfers keep it.
    pub enqueued_at: i64,
    pub assigned_at: Option<i64>,
    pub closed_at: Option<i64>,
    pub updated_at: i64,
}

#[derive(FromRow)]
struct ConversationRow {
    id: i64,
    reference: String,
    organization_id: String,
    queue_id: String,
    channel: String,
    state: String,
    contact_id: Option<i64>,
    operator_id: Option<i64>,
    language: String,
    subject: Option<String>,
    created_at: i64,
    enqueued_at: i64,
    assigned_at: Option<i64>,
    closed_at: Option<i64>,
    updated_at: i64,
}

const CONVERSATION_COLUMNS: &str = "id, reference, organization_id, queue_id, channel, state, contact_id, operator_id, \
     language, subject, created_at, enqueued_at, assigned_at, closed_at, updated_at";

impl TryFrom<ConversationRow> for Conversation {
    type Error = StoreError;
    fn try_from(row: ConversationRow) -> Result<Self> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("conversation {}: {what}", row.id));
        Ok(Conversation {
            channel: Channel::parse(&row.channel).ok_or_else(|| corrupt("channel"))?,
            state: ConversationState::parse(&row.state).ok_or_else(|| corrupt("state"))?,
            id: row.id,
            reference: row.reference,
            organization_id: row.organization_id,
            queue_id: row.queue_id,
            contact_id: row.contact_id,
            operator_id: row.operator_id,
            language: row.language,
            subject: row.subject,
            created_at: row.created_at,
            enqueued_at: row.enqueued_at,
            assigned_at: row.assigned_at,
            closed_at: row.closed_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewConversation {
    /// Prefix of the human reference, e.g. `URP`.
    pub reference_prefix: String,
    pub organization_id: String,
    pub queue_id: String,
    pub channel: Channel,
    pub contact_id: Option<i64>,
    pub language: String,
    pub subject: Option<String>,
}

/// One entry of a conversation's append-only history.
#[derive(Debug, Clone, PartialEq, Serialize, FromRow, ToSchema)]
pub struct ConversationEvent {
    pub id: i64,
    pub conversation_id: i64,
    pub at: i64,
    pub kind: String,
    pub queue_id: Option<String>,
    pub operator_id: Option<i64>,
    /// JSON details of the event.
    pub data: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the citizen.
    Inbound,
    /// To the citizen.
    Outbound,
    /// A note between operators, never shown to the citizen.
    Internal,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
            Direction::Internal => "internal",
        }
    }
}

/// A message to store (see [`Store::add_messages`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub conversation_id: i64,
    pub at: i64,
    pub direction: Direction,
    pub author_user_id: Option<i64>,
    pub body: String,
    /// The sender's own id for the message: a retry is stored once.
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, FromRow, ToSchema)]
pub struct Message {
    pub id: i64,
    pub conversation_id: i64,
    pub at: i64,
    pub direction: String,
    pub author_user_id: Option<i64>,
    pub body: String,
    pub content_type: String,
    pub client_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationDetail {
    #[serde(flatten)]
    pub conversation: Conversation,
    pub events: Vec<ConversationEvent>,
    pub messages: Vec<Message>,
}

/// The event that keeps a waiting call's place as a callback (the caller's
/// key, a callback queue's maximum wait, a restart that cut the call).
pub const CALLBACK_REQUESTED: &str = "callback_requested";

/// One call of the server to the citizen for a callback, and how it went
/// (`result`: `answered`, `busy`, `no_answer`, `declined`, `failed`).
pub const CALLBACK_ATTEMPT: &str = "callback_attempt";

/// What calling a citizen back needs from the conversation's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackPlan {
    /// The number to call (E.164).
    pub number: String,
    /// The unified number the citizen called, if it is known.
    pub called: Option<String>,
    /// The trunk the call came in through.
    pub trunk: Option<String>,
    /// Calls to the citizen so far that did not reach them.
    pub failed_attempts: u32,
    /// Calls the trunk itself failed (not the citizen's attempts).
    pub trunk_failures: u32,
}

impl ConversationDetail {
    /// Whether the citizen waits to be called back.
    pub fn is_callback(&self) -> bool {
        self.events.iter().any(|e| e.kind == CALLBACK_REQUESTED)
    }

    /// The data of the first event of `kind`.
    fn first_data(&self, kind: &str) -> Option<serde_json::Value> {
        let event = self.events.iter().find(|e| e.kind == kind)?;
        serde_json::from_str(&event.data).ok()
    }

    /// The number a call came from (its `call_started` event), unless the
    /// caller was anonymous.
    pub fn caller_number(&self) -> Option<String> {
        non_empty(&self.first_data("call_started")?["caller"])
    }

    /// The number to call back (the last callback request's, else the
    /// call's), where the call came from, and the attempts so far; `None`
    /// without a number.
    pub fn callback_plan(&self) -> Option<CallbackPlan> {
        let requested = self
            .events
            .iter()
            .rev()
            .filter(|e| e.kind == CALLBACK_REQUESTED)
            .find_map(|e| {
                non_empty(&serde_json::from_str::<serde_json::Value>(&e.data).ok()?["number"])
            });
        let started = self.first_data("call_started").unwrap_or_default();
        let results: Vec<serde_json::Value> = self
            .events
            .iter()
            .filter(|e| e.kind == CALLBACK_ATTEMPT)
            .filter_map(|e| serde_json::from_str::<serde_json::Value>(&e.data).ok())
            .map(|d| d["result"].clone())
            .collect();
        // Answered, or the trunk's failure: not the citizen's attempt.
        let failed_attempts = results
            .iter()
            .filter(|r| *r != "answered" && *r != "trunk_failed")
            .count();
        let trunk_failures = results.iter().filter(|r| *r == "trunk_failed").count();
        Some(CallbackPlan {
            number: requested.or_else(|| non_empty(&started["caller"]))?,
            called: non_empty(&started["called"]),
            trunk: non_empty(&started["trunk"]),
            failed_attempts: u32::try_from(failed_attempts).unwrap_or(u32::MAX),
            trunk_failures: u32::try_from(trunk_failures).unwrap_or(u32::MAX),
        })
    }
}

fn non_empty(value: &serde_json::Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Filters and paging for listing conversations, newest first.
#[derive(Debug, Clone, Default)]
pub struct ConversationFilter {
    pub state: Option<ConversationState>,
    pub queue_id: Option<String>,
    pub channel: Option<Channel>,
    pub organization_id: Option<String>,
    pub operator_id: Option<i64>,
    pub contact_id: Option<i64>,
    pub created_from: Option<i64>,
    pub created_to: Option<i64>,
    /// Keyset paging: only ids below this one.
    pub before_id: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub actor_user_id: Option<i64>,
    pub address: Option<&'a str>,
    pub action: &'a str,
    pub target: Option<String>,
    pub detail: serde_json::Value,
}

impl Store {
    /// Opens the store named by `url`: `sqlite://PATH` (the file and its
    /// directory are created, WAL journal, synchronous=FULL so a commit is
    /// on disk before we acknowledge anything) or `postgres://...`.
    pub async fn connect(url: &str) -> Result<Self> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            if let Some(dir) = options.get_filename().parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Self {
                db: Db::Sqlite(pool),
            })
        } else {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Self {
                db: Db::Postgres(pool),
            })
        }
    }

    pub fn backend(&self) -> &'static str {
        match self.db {
            Db::Sqlite(_) => "sqlite",
            Db::Postgres(_) => "postgres",
        }
    }

    /// Applies pending migrations (idempotent; on PostgreSQL under an
    /// advisory lock so nodes starting together do not race).
    pub async fn migrate(&self) -> Result<()> {
        let migrator = Migrator::with_migrations(migrations(self.backend()));
        with_pool!(self, pool => migrator.run(pool).await?);
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        with_pool!(self, pool => { sqlx::query("SELECT 1").execute(pool).await?; });
        Ok(())
    }

    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await);
    }

    // ---- organizations and queues (synchronised from config) ----

    pub async fn upsert_organization(
        &self,
        id: &str,
        name: &str,
        is_city: bool,
        now: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO organizations (id, name, is_city, updated_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (id) DO UPDATE SET name = excluded.name, is_city = excluded.is_city, \
                   updated_at = excluded.updated_at";
        with_pool!(self, pool => { sqlx::query(sql).bind(id).bind(name).bind(is_city).bind(now).execute(pool).await?; });
        Ok(())
    }

    /// Stores a queue's configuration snapshot, so reports and the console
    /// can join on it and old conversations keep a queue row to point at.
    pub async fn upsert_queue(
        &self,
        id: &str,
        queue: &crate::config::Queue,
        now: i64,
    ) -> Result<()> {
        let upsert = "INSERT INTO queues (id, organization_id, name, priority, settings, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET \
                      organization_id = excluded.organization_id, name = excluded.name, \
                      priority = excluded.priority, settings = excluded.settings, updated_at = excluded.updated_at";
        let settings =
            serde_json::to_string(queue).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (organization_id, name, priority, shared_with) = (
            &queue.organization,
            &queue.name,
            queue.priority,
            &queue.shared_with,
        );
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(upsert).bind(id).bind(organization_id).bind(name).bind(priority)
                .bind(&settings).bind(now).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM queue_shares WHERE queue_id = $1").bind(id).execute(&mut *tx).await?;
            for org in shared_with {
                sqlx::query("INSERT INTO queue_shares (queue_id, organization_id) VALUES ($1, $2)")
                    .bind(id).bind(org).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    // ---- users ----

    pub async fn count_users(&self) -> Result<i64> {
        let count: i64 = with_pool!(self, pool =>
            sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?);
        Ok(count)
    }

    pub async fn create_user(&self, user: &NewUser, now: i64) -> Result<User> {
        let insert = "INSERT INTO users (username, display_name, password_hash, role, organization_id, \
                      languages, capacity, active, created_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id";
        let languages = serde_json::to_string(&user.languages).unwrap_or_else(|_| "[]".into());
        let capacity = serde_json::to_string(&user.capacity).unwrap_or_else(|_| "{}".into());
        let id: i64 = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(insert)
                .bind(&user.username).bind(&user.display_name).bind(&user.password_hash)
                .bind(user.role.as_str()).bind(&user.organization_id).bind(&languages)
                .bind(&capacity).bind(true).bind(now)
                .fetch_one(&mut *tx).await.map_err(|e| unique_violation(e, "username"))?;
            for (skill, level) in &user.skills {
                sqlx::query("INSERT INTO user_skills (user_id, skill, level) VALUES ($1, $2, $3)")
                    .bind(id).bind(skill).bind(i32::from(*level)).execute(&mut *tx).await?;
            }
            for org in &user.grants {
                sqlx::query("INSERT INTO user_grants (user_id, organization_id) VALUES ($1, $2)")
                    .bind(id).bind(org).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            id
        });
        self.get_user(id)
            .await?
            .ok_or_else(|| StoreError::Corrupt(format!("user {id} vanished after insert")))
    }

    pub async fn get_user(&self, id: i64) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row: Option<UserRow> = with_pool!(self, pool =>
            sqlx::query_as(AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
        match row {
            Some(row) => Ok(self.complete_users(vec![row]).await?.pop()),
            None => Ok(None),
        }
    }

    /// The user and their password hash, for login. Inactive users too: the
    /// caller decides, after verifying, so timing does not reveal the state.
    pub async fn user_for_login(&self, username: &str) -> Result<Option<(User, String)>> {
        let sql = format!("SELECT {USER_COLUMNS}, password_hash FROM users WHERE username = $1");
        let row = with_pool!(self, pool => {
            let row: Option<(String,)> = sqlx::query_as("SELECT password_hash FROM users WHERE username = $1")
                .bind(username).fetch_optional(pool).await?;
            match row {
                None => None,
                Some((hash,)) => {
                    let user: Option<UserRow> = sqlx::query_as(AssertSqlSafe(sql))
                        .bind(username).fetch_optional(pool).await?;
                    user.map(|u| (u, hash))
                }
            }
        });
        match row {
            Some((row, hash)) => Ok(self
                .complete_users(vec![row])
                .await?
                .pop()
                .map(|u| (u, hash))),
            None => Ok(None),
        }
    }

    /// Users visible in `scope`, by username.
    pub async fn list_users(&self, scope: &Scope) -> Result<Vec<User>> {
        let mut args = Vec::new();
        let filter = scope.filter("organization_id", None, &mut args);
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE 1 = 1{filter} ORDER BY username");
        let rows: Vec<UserRow> = with_pool!(self, pool =>
            bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &args).fetch_all(pool).await?);
        self.complete_users(rows).await
    }

    /// Adds skills and grants to user rows (two queries, whatever the count).
    async fn complete_users(&self, rows: Vec<UserRow>) -> Result<Vec<User>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let args: Vec<Arg> = rows.iter().map(|r| Arg::Int(r.id)).collect();
        let marks = (1..=args.len())
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let skills_sql =
            format!("SELECT user_id, skill, level FROM user_skills WHERE user_id IN ({marks})");
        let grants_sql = format!(
            "SELECT user_id, organization_id FROM user_grants WHERE user_id IN ({marks}) ORDER BY organization_id"
        );
        let (skills, grants): (Vec<SkillRow>, Vec<GrantRow>) = with_pool!(self, pool => (
            bind_all!(sqlx::query_as(AssertSqlSafe(skills_sql)), &args).fetch_all(pool).await?,
            bind_all!(sqlx::query_as(AssertSqlSafe(grants_sql)), &args).fetch_all(pool).await?,
        ));
        rows.into_iter()
            .map(|row| {
                let user_skills = skills
                    .iter()
                    .filter(|(id, _, _)| *id == row.id)
                    .map(|(_, skill, level)| (skill.clone(), u8::try_from(*level).unwrap_or(1)))
                    .collect();
                let user_grants = grants
                    .iter()
                    .filter(|(id, _)| *id == row.id)
                    .map(|(_, org)| org.clone())
                    .collect();
                row.into_user(user_skills, user_grants)
            })
            .collect()
    }

    /// Applies `changes`; returns the updated user, or `None` if there is none.
    pub async fn update_user(
        &self,
        id: i64,
        changes: &UserChanges,
        now: i64,
    ) -> Result<Option<User>> {
        let Some(current) = self.get_user(id).await? else {
            return Ok(None);
        };
        let display_name = changes
            .display_name
            .as_ref()
            .unwrap_or(&current.display_name);
        let role = changes.role.unwrap_or(current.role);
        let languages =
            serde_json::to_string(changes.languages.as_ref().unwrap_or(&current.languages))
                .unwrap_or_else(|_| "[]".into());
        let capacity =
            serde_json::to_string(changes.capacity.as_ref().unwrap_or(&current.capacity))
                .unwrap_or_else(|_| "{}".into());
        let active = changes.active.unwrap_or(current.active);
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query("UPDATE users SET display_name = $1, role = $2, languages = $3, capacity = $4, \
                         active = $5, updated_at = $6 WHERE id = $7")
                .bind(display_name).bind(role.as_str()).bind(&languages).bind(&capacity)
                .bind(active).bind(now).bind(id).execute(&mut *tx).await?;
            if let Some(hash) = &changes.password_hash {
                sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(hash).bind(id).execute(&mut *tx).await?;
            }
            if let Some(skills) = &changes.skills {
                sqlx::query("DELETE FROM user_skills WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
                for (skill, level) in skills {
                    sqlx::query("INSERT INTO user_skills (user_id, skill, level) VALUES ($1, $2, $3)")
                        .bind(id).bind(skill).bind(i32::from(*level)).execute(&mut *tx).await?;
                }
            }
            if let Some(grants) = &changes.grants {
                sqlx::query("DELETE FROM user_grants WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
                for org in grants {
                    sqlx::query("INSERT INTO user_grants (user_id, organization_id) VALUES ($1, $2)")
                        .bind(id).bind(org).execute(&mut *tx).await?;
                }
            }
            // A password change, deactivation or role change ends every session.
            if changes.password_hash.is_some() || !active || role != current.role {
                sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(id).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        });
        self.get_user(id).await
    }

    // ---- sessions ----

    pub async fn insert_session(
        &self,
        token_hash: &str,
        user_id: i64,
        now: i64,
        expires_at: i64,
        address: Option<&str>,
    ) -> Result<()> {
        let sql = "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, address) VALUES ($1, $2, $3, $4, $5)";
        with_pool!(self, pool => { sqlx::query(sql).bind(token_hash).bind(user_id).bind(now)
            .bind(expires_at).bind(address).execute(pool).await?; });
        Ok(())
    }

    /// The active user owning an unexpired session, with its expiry.
    pub async fn session_user(&self, token_hash: &str, now: i64) -> Result<Option<(User, i64)>> {
        let sql = "SELECT user_id, expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
                   WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.active = $3";
        let row: Option<(i64, i64)> = with_pool!(self, pool =>
            sqlx::query_as(sql).bind(token_hash).bind(now).bind(true).fetch_optional(pool).await?);
        match row {
            Some((user_id, expires_at)) => {
                Ok(self.get_user(user_id).await?.map(|u| (u, expires_at)))
            }
            None => Ok(None),
        }
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        with_pool!(self, pool => { sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash).execute(pool).await?; });
        Ok(())
    }

    pub async fn purge_expired_sessions(&self, now: i64) -> Result<u64> {
        let done = with_pool!(self, pool => sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now).execute(pool).await?.rows_affected());
        Ok(done)
    }

    // ---- conversations ----

    /// Creates a queued conversation with its human reference and its first
    /// event, in one transaction: when this returns, it is durable.
    pub async fn create_conversation(
        &self,
        new: &NewConversation,
        now: i64,
        year: i32,
    ) -> Result<Conversation> {
        let counter = "INSERT INTO reference_counters (prefix, year, value) VALUES ($1, $2, 1) \
                       ON CONFLICT (prefix, year) DO UPDATE SET value = reference_counters.value + 1 \
                       RETURNING value";
        let insert = format!(
            "INSERT INTO conversations (reference, organization_id, queue_id, channel, state, contact_id, \
             language, subject, created_at, enqueued_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $9) RETURNING {CONVERSATION_COLUMNS}"
        );
        let event = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, data) VALUES ($1, $2, $3, $4, $5)";
        let row: ConversationRow = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let value: i64 = sqlx::query_scalar(counter).bind(&new.reference_prefix).bind(year)
                .fetch_one(&mut *tx).await?;
            let reference = format!("{}-{year}-{value:06}", new.reference_prefix);
            let row: ConversationRow = sqlx::query_as(AssertSqlSafe(insert))
                .bind(&reference).bind(&new.organization_id).bind(&new.queue_id)
                .bind(new.channel.as_str()).bind(ConversationState::Queued.as_str())
                .bind(new.contact_id).bind(&new.language).bind(&new.subject).bind(now)
                .fetch_one(&mut *tx).await?;
            let data = serde_json::json!({ "channel": new.channel.as_str() }).to_string();
            sqlx::query(event).bind(row.id).bind(now).bind("queued").bind(&new.queue_id).bind(&data)
                .execute(&mut *tx).await?;
            tx.commit().await?;
            row
        });
        row.try_into()
    }

    pub async fn append_event(
        &self,
        conversation_id: i64,
        at: i64,
        kind: &str,
        queue_id: Option<&str>,
        operator_id: Option<i64>,
        data: &serde_json::Value,
    ) -> Result<i64> {
        let sql = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, operator_id, data) \
                   VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        let data = data.to_string();
        let id: i64 = with_pool!(self, pool => sqlx::query_scalar(sql).bind(conversation_id).bind(at)
            .bind(kind).bind(queue_id).bind(operator_id).bind(&data).fetch_one(pool).await?);
        Ok(id)
    }

    /// Assigns a waiting conversation to an operator. The state guard makes
    /// this a compare-and-set: a conversation already assigned (by another
    /// node, or a duplicate accept) is not assigned again, and `false` says so.
    pub async fn assign_conversation(
        &self,
        conversation_id: i64,
        operator_id: i64,
        now: i64,
    ) -> Result<bool> {
        let write = RoutingWrite::Assign {
            conversation_id,
            operator_id,
            now,
        };
        self.moved(write).await
    }

    /// Records an offer and marks the conversation offered, with its event.
    /// Returns the offer's row id.
    pub async fn insert_offer(
        &self,
        conversation_id: i64,
        operator_id: i64,
        queue_id: &str,
        offered_at: i64,
        expires_at: i64,
        router_offer_id: i64,
    ) -> Result<i64> {
        let write = RoutingWrite::Offer {
            conversation_id,
            operator_id,
            queue_id: queue_id.to_owned(),
            offered_at,
            expires_at,
            router_offer_id,
        };
        match self
            .routing_batch(std::slice::from_ref(&write))
            .await?
            .first()
        {
            Some(RoutingOutcome::Offer(id)) => Ok(*id),
            _ => Err(StoreError::Corrupt("offer not recorded".into())),
        }
    }

    /// One guarded write on its own: whether the conversation moved.
    async fn moved(&self, write: RoutingWrite) -> Result<bool> {
        let outcomes = self.routing_batch(std::slice::from_ref(&write)).await?;
        Ok(matches!(
            outcomes.first(),
            Some(RoutingOutcome::Moved(Some(_)))
        ))
    }

    /// The router's writes of one turn (offers, their outcomes, assignments,
    /// state changes) in **one transaction**: one commit, so one fsync, for
    /// however many commands a burst produced (about 2 ms each on a small
    /// VM, which capped a router committing each on its own at a few hundred
    /// writes a second). Outcomes come back in order, one per write.
    pub async fn routing_batch(&self, writes: &[RoutingWrite]) -> Result<Vec<RoutingOutcome>> {
        let offer = "INSERT INTO offers (conversation_id, operator_id, queue_id, offered_at, expires_at, router_offer_id) \
                     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        let offered =
            "UPDATE conversations SET state = $1, updated_at = $2 WHERE id = $3 AND state = $4";
        let offer_event = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, operator_id, data) \
                           VALUES ($1, $2, 'offered', $3, $4, $5)";
        let close = "UPDATE offers SET outcome = $1, decided_at = $2 \
                     WHERE conversation_id = $3 AND router_offer_id = $4 AND outcome IS NULL";
        let assign = "UPDATE conversations SET state = $1, operator_id = $2, assigned_at = $3, updated_at = $3 \
                      WHERE id = $4 AND state IN ($5, $6) RETURNING organization_id";
        let event = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, operator_id, data) \
                     SELECT id, $1, $2, queue_id, $3, $4 FROM conversations WHERE id = $5";
        let mut outcomes = Vec::with_capacity(writes.len());
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            for write in writes {
                let outcome = match write {
                    RoutingWrite::Offer { conversation_id, operator_id, queue_id, offered_at, expires_at, router_offer_id } => {
                        let id: i64 = sqlx::query_scalar(offer).bind(conversation_id).bind(operator_id).bind(queue_id)
                            .bind(offered_at).bind(expires_at).bind(router_offer_id).fetch_one(&mut *tx).await?;
                        sqlx::query(offered).bind(ConversationState::Offered.as_str()).bind(offered_at)
                            .bind(conversation_id).bind(ConversationState::Queued.as_str()).execute(&mut *tx).await?;
                        let data = serde_json::json!({ "expires_at": expires_at }).to_string();
                        sqlx::query(offer_event).bind(conversation_id).bind(offered_at).bind(queue_id)
                            .bind(operator_id).bind(&data).execute(&mut *tx).await?;
                        RoutingOutcome::Offer(id)
                    }
                    RoutingWrite::CloseOffer { conversation_id, router_offer_id, outcome, now } => {
                        sqlx::query(close).bind(outcome).bind(now).bind(conversation_id).bind(router_offer_id)
                            .execute(&mut *tx).await?;
                        RoutingOutcome::Done
                    }
                    RoutingWrite::Assign { conversation_id, operator_id, now } => {
                        let org: Option<String> = sqlx::query_scalar(assign)
                            .bind(ConversationState::Assigned.as_str()).bind(operator_id).bind(now).bind(conversation_id)
                            .bind(ConversationState::Queued.as_str()).bind(ConversationState::Offered.as_str())
                            .fetch_optional(&mut *tx).await?;
                        if org.is_some() {
                            sqlx::query(event).bind(now).bind("assigned").bind(operator_id).bind("{}")
                                .bind(conversation_id).execute(&mut *tx).await?;
                        }
                        RoutingOutcome::Moved(org)
                    }
                    RoutingWrite::Transition { conversation_id, from, to, kind, operator_id, data, now } => {
                        let (update, args) = transition_update(*conversation_id, from, *to, *now);
                        let org: Option<String> = bind_all!(sqlx::query_scalar(AssertSqlSafe(update)), &args)
                            .fetch_optional(&mut *tx).await?;
                        if org.is_some() {
                            sqlx::query(event).bind(now).bind(kind).bind(operator_id).bind(data.to_string())
                                .bind(conversation_id).execute(&mut *tx).await?;
                        }
                        RoutingOutcome::Moved(org)
                    }
                };
                outcomes.push(outcome);
            }
            tx.commit().await?;
        });
        Ok(outcomes)
    }

    /// Withdraws every open offer (at start: the router makes them again).
    pub async fn withdraw_open_offers(&self, now: i64) -> Result<u64> {
        let sql = "UPDATE offers SET outcome = 'withdrawn', decided_at = $1 WHERE outcome IS NULL";
        let n = with_pool!(self, pool => sqlx::query(sql).bind(now).execute(pool).await?.rows_affected());
        Ok(n)
    }

    /// Moves a conversation to `state` with an event of `kind`, if it is in
    /// one of the states in `from` (a compare-and-set). Entering a terminal
    /// state stamps `closed_at`. Returns whether it moved.
    #[allow(clippy::too_many_arguments)]
    pub async fn transition(
        &self,
        conversation_id: i64,
        from: &[ConversationState],
        to: ConversationState,
        kind: &str,
        operator_id: Option<i64>,
        data: &serde_json::Value,
        now: i64,
    ) -> Result<bool> {
        let write = RoutingWrite::Transition {
            conversation_id,
            from: from.to_vec(),
            to,
            kind: kind.to_owned(),
            operator_id,
            data: data.clone(),
            now,
        };
        self.moved(write).await
    }

    /// The organization that owns a conversation (one indexed read).
    pub async fn conversation_organization(&self, conversation_id: i64) -> Result<Option<String>> {
        let sql = "SELECT organization_id FROM conversations WHERE id = $1";
        let org = with_pool!(self, pool => sqlx::query_scalar(sql).bind(conversation_id).fetch_optional(pool).await?);
        Ok(org)
    }

    /// The channel of a conversation (one indexed read).
    pub async fn conversation_channel(&self, conversation_id: i64) -> Result<Option<Channel>> {
        let sql = "SELECT channel FROM conversations WHERE id = $1";
        let channel: Option<String> = with_pool!(self, pool => sqlx::query_scalar(sql).bind(conversation_id).fetch_optional(pool).await?);
        Ok(channel.as_deref().and_then(Channel::parse))
    }

    /// Moves a waiting conversation to another queue (overflow, transfer); it
    /// keeps its enqueue time, and the new queue's organization owns it.
    pub async fn move_to_queue(
        &self,
        conversation_id: i64,
        queue_id: &str,
        organization_id: &str,
        kind: &str,
        data: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let update = "UPDATE conversations SET queue_id = $1, organization_id = $2, state = $3, \
                      operator_id = NULL, updated_at = $4 WHERE id = $5";
        let event = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, data) VALUES ($1, $2, $3, $4, $5)";
        let data = data.to_string();
        with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            sqlx::query(update).bind(queue_id).bind(organization_id).bind(ConversationState::Queued.as_str())
                .bind(now).bind(conversation_id).execute(&mut *tx).await?;
            sqlx::query(event).bind(conversation_id).bind(now).bind(kind).bind(queue_id).bind(&data)
                .execute(&mut *tx).await?;
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn record_wrap_up(
        &self,
        conversation_id: i64,
        operator_id: i64,
        code: &str,
        note: Option<&str>,
        now: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO wrap_ups (conversation_id, operator_id, code, note, at) VALUES ($1, $2, $3, $4, $5)";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(conversation_id).bind(operator_id).bind(code).bind(note).bind(now)
                .execute(pool).await?;
        });
        Ok(())
    }

    /// Conversations the router must know about at start: waiting, offered,
    /// in progress or in wrap-up, oldest first.
    pub async fn active_conversations(&self) -> Result<Vec<Conversation>> {
        let sql = format!(
            "SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE state IN ($1, $2, $3, $4) ORDER BY enqueued_at, id"
        );
        let rows: Vec<ConversationRow> = with_pool!(self, pool => sqlx::query_as(AssertSqlSafe(sql))
            .bind(ConversationState::Queued.as_str()).bind(ConversationState::Offered.as_str())
            .bind(ConversationState::Assigned.as_str()).bind(ConversationState::WrapUp.as_str())
            .fetch_all(pool).await?);
        rows.into_iter().map(Conversation::try_from).collect()
    }

    /// The waiting conversations whose citizen asked to be called back
    /// (a `callback_requested` event), for the router's restore.
    pub async fn callback_conversations(&self) -> Result<Vec<i64>> {
        let sql = "SELECT DISTINCT c.id FROM conversations c JOIN conversation_events e \
                   ON e.conversation_id = c.id AND e.kind = $3 \
                   WHERE c.state IN ($1, $2) ORDER BY c.id";
        let ids: Vec<(i64,)> = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(ConversationState::Queued.as_str()).bind(ConversationState::Offered.as_str())
            .bind(CALLBACK_REQUESTED)
            .fetch_all(pool).await?);
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    /// Stores the presence an operator declared (JSON of the engine's type).
    pub async fn set_presence(&self, user_id: i64, presence: &str, now: i64) -> Result<()> {
        let sql = "INSERT INTO operator_presence (user_id, presence, updated_at) VALUES ($1, $2, $3) \
                   ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, \
                   updated_at = CASE WHEN operator_presence.presence = excluded.presence \
                   THEN operator_presence.updated_at ELSE excluded.updated_at END";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(user_id).bind(presence).bind(now).execute(pool).await?;
        });
        Ok(())
    }

    /// Every stored presence: (user id, presence JSON, when it last changed).
    /// Setting the same presence again keeps its time.
    pub async fn presences(&self) -> Result<Vec<(i64, String, i64)>> {
        let sql = "SELECT user_id, presence, updated_at FROM operator_presence ORDER BY user_id";
        let rows = with_pool!(self, pool => sqlx::query_as(sql).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Stores a message; a retry with the same `client_id` returns the
    /// message stored the first time instead of a copy.
    pub async fn add_message(
        &self,
        conversation_id: i64,
        at: i64,
        direction: Direction,
        author_user_id: Option<i64>,
        body: &str,
        client_id: Option<&str>,
    ) -> Result<Message> {
        let insert = "INSERT INTO messages (conversation_id, at, direction, author_user_id, body, client_id) \
                      VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conversation_id, client_id) DO NOTHING \
                      RETURNING id";
        let select = "SELECT id, conversation_id, at, direction, author_user_id, body, content_type, client_id \
                      FROM messages WHERE conversation_id = $1 AND (id = $2 OR client_id = $3)";
        let message: Message = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            // No row back means the client id was already stored: a retry.
            let id: Option<i64> = sqlx::query_scalar(insert).bind(conversation_id).bind(at)
                .bind(direction.as_str()).bind(author_user_id).bind(body).bind(client_id)
                .fetch_optional(&mut *tx).await?;
            let message: Message = sqlx::query_as(select).bind(conversation_id).bind(id.unwrap_or(-1))
                .bind(client_id).fetch_one(&mut *tx).await?;
            tx.commit().await?;
            message
        });
        Ok(message)
    }

    /// Stores several messages in one transaction (one commit, one fsync):
    /// the group commit of [`crate::hub`]'s message writer. The results are
    /// in the order of `batch`; a retried client id gets the stored message,
    /// as with [`Store::add_message`], also when both copies are in `batch`.
    pub async fn add_messages(&self, batch: &[NewMessage]) -> Result<Vec<Message>> {
        // One round trip per new row; a second only for a retried client id.
        let insert = "INSERT INTO messages (conversation_id, at, direction, author_user_id, body, client_id) \
                      VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (conversation_id, client_id) DO NOTHING \
                      RETURNING id, conversation_id, at, direction, author_user_id, body, content_type, client_id";
        let select = "SELECT id, conversation_id, at, direction, author_user_id, body, content_type, client_id \
                      FROM messages WHERE conversation_id = $1 AND client_id = $2";
        let messages: Vec<Message> = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let mut out = Vec::with_capacity(batch.len());
            for m in batch {
                let inserted: Option<Message> = sqlx::query_as(insert).bind(m.conversation_id).bind(m.at)
                    .bind(m.direction.as_str()).bind(m.author_user_id).bind(&m.body)
                    .bind(m.client_id.as_deref()).fetch_optional(&mut *tx).await?;
                let message = match inserted {
                    Some(message) => message,
                    // No row back means the client id was already stored: a retry.
                    None => sqlx::query_as(select).bind(m.conversation_id)
                        .bind(m.client_id.as_deref()).fetch_one(&mut *tx).await?,
                };
                out.push(message);
            }
            tx.commit().await?;
            out
        });
        Ok(messages)
    }

    pub async fn list_conversations(
        &self,
        scope: &Scope,
        filter: &ConversationFilter,
    ) -> Result<Vec<Conversation>> {
        let mut args = Vec::new();
        let mut sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE 1 = 1");
        sql.push_str(&scope.filter("organization_id", Some("operator_id"), &mut args));
        let mut add = |column: &str, op: &str, value: Arg| {
            args.push(value);
            sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
        };
        if let Some(state) = filter.state {
            add("state", "=", Arg::Text(state.as_str().into()));
        }
        if let Some(queue) = &filter.queue_id {
            add("queue_id", "=", Arg::Text(queue.clone()));
        }
        if let Some(channel) = filter.channel {
            add("channel", "=", Arg::Text(channel.as_str().into()));
        }
        if let Some(org) = &filter.organization_id {
            add("organization_id", "=", Arg::Text(org.clone()));
        }
        if let Some(operator) = filter.operator_id {
            add("operator_id", "=", Arg::Int(operator));
        }
        if let Some(contact) = filter.contact_id {
            add("contact_id", "=", Arg::Int(contact));
        }
        if let Some(from) = filter.created_from {
            add("created_at", ">=", Arg::Int(from));
        }
        if let Some(to) = filter.created_to {
            add("created_at", "<", Arg::Int(to));
        }
        if let Some(before) = filter.before_id {
            add("id", "<", Arg::Int(before));
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            filter.limit.clamp(1, 500)
        ));
        let rows: Vec<ConversationRow> = with_pool!(self, pool =>
            bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &args).fetch_all(pool).await?);
        rows.into_iter().map(Conversation::try_from).collect()
    }

    /// One conversation with its history, if it exists and `scope` may see it.
    pub async fn get_conversation(
        &self,
        scope: &Scope,
        id: i64,
    ) -> Result<Option<ConversationDetail>> {
        let mut args = vec![Arg::Int(id)];
        let filter = scope.filter("organization_id", Some("operator_id"), &mut args);
        let sql = format!("SELECT {CONVERSATION_COLUMNS} FROM conversations WHERE id = $1{filter}");
        let events_sql = "SELECT id, conversation_id, at, kind, queue_id, operator_id, data \
                          FROM conversation_events WHERE conversation_id = $1 ORDER BY id";
        let messages_sql = "SELECT id, conversation_id, at, direction, author_user_id, body, content_type, client_id \
                            FROM messages WHERE conversation_id = $1 ORDER BY id";
        let found = with_pool!(self, pool => {
            let row: Option<ConversationRow> = bind_all!(sqlx::query_as(AssertSqlSafe(sql)), &args)
                .fetch_optional(pool).await?;
            match row {
                None => None,
                Some(row) => {
                    let events: Vec<ConversationEvent> = sqlx::query_as(events_sql).bind(id).fetch_all(pool).await?;
                    let messages: Vec<Message> = sqlx::query_as(messages_sql).bind(id).fetch_all(pool).await?;
                    Some((row, events, messages))
                }
            }
        });
        match found {
            None => Ok(None),
            Some((row, events, messages)) => Ok(Some(ConversationDetail {
                conversation: row.try_into()?,
                events,
                messages,
            })),
        }
    }

    // ---- contacts and audit ----

    pub async fn create_contact(
        &self,
        name: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        let sql = "INSERT INTO contacts (name, email, phone, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) RETURNING id";
        let id: i64 = with_pool!(self, pool => sqlx::query_scalar(sql).bind(name).bind(email).bind(phone)
            .bind(now).fetch_one(pool).await?);
        Ok(id)
    }

    pub async fn audit(&self, entry: &AuditEntry<'_>, now: i64) -> Result<()> {
        let sql = "INSERT INTO audit_log (at, actor_user_id, address, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)";
        let detail = entry.detail.to_string();
        with_pool!(self, pool => { sqlx::query(sql).bind(now).bind(entry.actor_user_id).bind(entry.address)
            .bind(entry.action).bind(&entry.target).bind(&detail).execute(pool).await?; });
        Ok(())
    }

    /// The newest audit entries: (action, target, actor), for tests and the admin view.
    pub async fn recent_audit(
        &self,
        limit: i64,
    ) -> Result<Vec<(String, Option<String>, Option<i64>)>> {
        let sql = "SELECT action, target, actor_user_id FROM audit_log ORDER BY id DESC LIMIT $1";
        let rows = with_pool!(self, pool => sqlx::query_as(sql).bind(limit).fetch_all(pool).await?);
        Ok(rows)
    }
}

/// Maps a unique-constraint violation to [`StoreError::Conflict`].
fn unique_violation(err: sqlx::Error, what: &'static str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what),
        _ => StoreError::Database(err),
    }
}

/// One of the router's writes in [`Store::routing_batch`].
#[derive(Debug, Clone)]
pub enum RoutingWrite {
    /// A new offer; the conversation becomes offered.
    Offer {
        conversation_id: i64,
        operator_id: i64,
        queue_id: String,
        offered_at: i64,
        expires_at: i64,
        router_offer_id: i64,
    },
    /// An open offer settled.
    CloseOffer {
        conversation_id: i64,
        router_offer_id: i64,
        outcome: String,
        now: i64,
    },
    /// A compare-and-set assignment (from queued or offered).
    Assign {
        conversation_id: i64,
        operator_id: i64,
        now: i64,
    },
    /// A compare-and-set state change with its event (see [`Store::transition`]).
    Transition {
        conversation_id: i64,
        from: Vec<ConversationState>,
        to: ConversationState,
        kind: String,
        operator_id: Option<i64>,
        data: serde_json::Value,
        now: i64,
    },
}

/// What a [`RoutingWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutingOutcome {
    /// The new offer's row id.
    Offer(i64),
    /// Assign or transition: the owning organization if the conversation
    /// moved, `None` if the compare-and-set refused.
    Moved(Option<String>),
    Done,
}

/// The guarded UPDATE of [`Store::transition`]; entering a terminal state
/// stamps `closed_at`.
fn transition_update(
    conversation_id: i64,
    from: &[ConversationState],
    to: ConversationState,
    now: i64,
) -> (String, Vec<Arg>) {
    let mut args = vec![
        Arg::Text(to.as_str().into()),
        Arg::Int(now),
        Arg::Int(conversation_id),
    ];
    let marks: Vec<String> = from
        .iter()
        .map(|s| {
            args.push(Arg::Text(s.as_str().into()));
            format!("${}", args.len())
        })
        .collect();
    let closed = match to {
        ConversationState::Closed | ConversationState::Abandoned => ", closed_at = $2",
        // Back in line (a callback to try again): nobody's any more.
        ConversationState::Queued => ", operator_id = NULL",
        _ => "",
    };
    let update = format!(
        "UPDATE conversations SET state = $1, updated_at = $2{closed} WHERE id = $3 AND state IN ({}) \
         RETURNING organization_id",
        marks.join(", ")
    );
    (update, args)
}
