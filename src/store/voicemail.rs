//! Voice messages (voice channel, issue 5): what a caller said after the
//! tone at a queue's maximum wait with `voicemail`, kept with the
//! conversation as a WAV file for the operator who calls back.

use super::{Db, Result, Store};

/// A stored voice message, with its file.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct VoiceMessage {
    pub id: i64,
    pub conversation_id: i64,
    pub at: i64,
    pub duration_ms: i64,
    pub wav: Vec<u8>,
}

/// The conversation event that points at a stored voice message.
pub const VOICEMAIL: &str = "voicemail";

impl Store {
    /// Stores a voice message and its `voicemail` event (`id`,
    /// `duration_ms`, `bytes`) in one transaction; the message's id.
    pub async fn store_voice_message(
        &self,
        conversation_id: i64,
        queue_id: &str,
        at: i64,
        duration_ms: i64,
        wav: &[u8],
    ) -> Result<i64> {
        let insert = "INSERT INTO voice_messages (conversation_id, at, duration_ms, wav) \
                      VALUES ($1, $2, $3, $4) RETURNING id";
        let event = "INSERT INTO conversation_events (conversation_id, at, kind, queue_id, data) \
                     VALUES ($1, $2, $3, $4, $5)";
        let bytes = i64::try_from(wav.len()).unwrap_or(i64::MAX);
        let id: i64 = with_pool!(self, pool => {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(insert)
                .bind(conversation_id).bind(at).bind(duration_ms).bind(wav)
                .fetch_one(&mut *tx).await?;
            let data = serde_json::json!({ "id": id, "duration_ms": duration_ms, "bytes": bytes });
            sqlx::query(event)
                .bind(conversation_id).bind(at).bind(VOICEMAIL).bind(queue_id).bind(data.to_string())
                .execute(&mut *tx).await?;
            tx.commit().await?;
            id
        });
        Ok(id)
    }

    /// One voice message of a conversation (the caller has checked the
    /// conversation's scope).
    pub async fn voice_message(
        &self,
        conversation_id: i64,
        id: i64,
    ) -> Result<Option<VoiceMessage>> {
        let sql = "SELECT id, conversation_id, at, duration_ms, wav FROM voice_messages \
                   WHERE id = $1 AND conversation_id = $2";
        let row = with_pool!(self, pool =>
            sqlx::query_as(sql).bind(id).bind(conversation_id).fetch_optional(pool).await?);
        Ok(row)
    }
}
