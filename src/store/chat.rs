//! Store parts of the web chat and the consoles: resume tokens, ratings,
//! replay of messages, open offers and per-operator counts.

use serde::Serialize;
use utoipa::ToSchema;

use super::{Db, Message, Result, Store};

/// An offer still open in the store, as a console needs it after a reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct OpenOffer {
    /// The router's number for the offer: what `accept` and `decline` name.
    pub router_offer_id: i64,
    pub conversation_id: i64,
    pub queue_id: String,
    pub offered_at: i64,
    pub expires_at: i64,
}

/// A citizen as the console shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow, ToSchema)]
pub struct Contact {
    pub id: i64,
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub created_at: i64,
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, at, direction, author_user_id, body, content_type, client_id";

impl Store {
    pub async fn create_chat_session(
        &self,
        token_hash: &str,
        conversation_id: i64,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let sql = "INSERT INTO chat_sessions (token_hash, conversation_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
        with_pool!(self, pool => {
            sqlx::query(sql).bind(token_hash).bind(conversation_id).bind(now).bind(expires_at).execute(pool).await?;
        });
        Ok(())
    }

    /// The conversation of a live resume token, whose life is extended.
    pub async fn resume_chat_session(
        &self,
        token_hash: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Option<i64>> {
        let sql = "UPDATE chat_sessions SET expires_at = $1 WHERE token_hash = $2 AND expires_at > $3 RETURNING conversation_id";
        let id: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(sql).bind(expires_at).bind(token_hash)
            .bind(now).fetch_optional(pool).await?);
        Ok(id)
    }

    /// Messages after `after_id` the citizen may see (never internal notes), in order.
    pub async fn citizen_messages_after(
        &self,
        conversation_id: i64,
        after_id: i64,
    ) -> Result<Vec<Message>> {
        let sql = format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND id > $2 AND direction <> 'internal' ORDER BY id"
        );
        let rows = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(conversation_id)
            .bind(after_id).fetch_all(pool).await?);
        Ok(rows)
    }

    pub async fn message(&self, id: i64) -> Result<Option<Message>> {
        let sql = format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE id = $1");
        let row = with_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// Stores the citizen's rating; `false` if the conversation has one already.
    pub async fn save_rating(
        &self,
        conversation_id: i64,
        score: i32,
        comment: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let sql = "INSERT INTO ratings (conversation_id, score, comment, at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (conversation_id) DO NOTHING";
        let done = with_pool!(self, pool => sqlx::query(sql).bind(conversation_id).bind(score).bind(comment)
            .bind(now).execute(pool).await?.rows_affected());
        Ok(done == 1)
    }

    pub async fn rating(&self, conversation_id: i64) -> Result<Option<(i32, Option<String>)>> {
        let sql = "SELECT score, comment FROM ratings WHERE conversation_id = $1";
        let row = with_pool!(self, pool => sqlx::query_as(sql).bind(conversation_id).fetch_optional(pool).await?);
        Ok(row)
    }

    pub async fn open_offers_for(&self, operator_id: i64) -> Result<Vec<OpenOffer>> {
        let sql = "SELECT router_offer_id, conversation_id, queue_id, offered_at, expires_at FROM offers \
                   WHERE operator_id = $1 AND outcome IS NULL AND router_offer_id IS NOT NULL ORDER BY id";
        let rows =
            with_pool!(self, pool => sqlx::query_as(sql).bind(operator_id).fetch_all(pool).await?);
        Ok(rows)
    }

    /// Conversations each operator took since `since` (Unix ms): (operator, count).
    pub async fn handled_since(&self, since: i64) -> Result<Vec<(i64, i64)>> {
        let sql = "SELECT operator_id, COUNT(*) FROM conversation_events \
                   WHERE kind = 'assigned' AND at >= $1 AND operator_id IS NOT NULL GROUP BY operator_id";
        let rows = with_pool!(self, pool => sqlx::query_as(sql).bind(since).fetch_all(pool).await?);
        Ok(rows)
    }

    pub async fn contact(&self, id: i64) -> Result<Option<Contact>> {
        let sql = "SELECT id, name, email, phone, created_at FROM contacts WHERE id = $1";
        let row =
            with_pool!(self, pool => sqlx::query_as(sql).bind(id).fetch_optional(pool).await?);
        Ok(row)
    }

    /// The contact with this e-mail address, created if there is none.
    pub async fn contact_for(
        &self,
        name: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
        now: i64,
    ) -> Result<i64> {
        if let Some(email) = email {
            let sql = "SELECT id FROM contacts WHERE email = $1 ORDER BY id LIMIT 1";
            let found: Option<i64> = with_pool!(self, pool => sqlx::query_scalar(sql).bind(email).fetch_optional(pool).await?);
            if let Some(id) = found {
                return Ok(id);
            }
        }
        self.create_contact(name, email, phone, now).await
    }
}
