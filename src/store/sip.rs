//! Operators' SIP accounts (voice channel, issue 5): the username their
//! phones register with and the digest HA1 of the password for each
//! algorithm the registrar offers (MD5 and SHA-256), never the password.
//! [`StoreCredentials`] is the registrar's view of this table.

use std::future::Future;

use ccu_channels::sip::digest::Algorithm;
use ccu_channels::sip::registrar::{OperatorId, SipCredentials, StoredCredential, ha1_for};

use super::{Db, Result, Store, unique_violation};

/// A user's SIP account, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SipAccount {
    pub user_id: i64,
    pub sip_username: String,
    /// The digest realm the HA1 values were computed for.
    pub realm: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
    /// Gives `user_id` the SIP account `sip_username` with `password`
    /// (replacing any they had). `Conflict("sip username")` when another
    /// user has that SIP username.
    pub async fn set_sip_account(
        &self,
        user_id: i64,
        sip_username: &str,
        realm: &str,
        password: &str,
        now: i64,
    ) -> Result<SipAccount> {
        let md5 = ha1_for(sip_username, realm, password, Algorithm::Md5);
        let sha256 = ha1_for(sip_username, realm, password, Algorithm::Sha256);
        let sql = "INSERT INTO sip_accounts (user_id, sip_username, realm, ha1_md5, ha1_sha256, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $6) \
                   ON CONFLICT (user_id) DO UPDATE SET sip_username = excluded.sip_username, \
                   realm = excluded.realm, ha1_md5 = excluded.ha1_md5, ha1_sha256 = excluded.ha1_sha256, \
                   updated_at = excluded.updated_at \
                   RETURNING user_id, sip_username, realm, created_at, updated_at";
        let account: SipAccount = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(user_id).bind(sip_username).bind(realm).bind(&md5).bind(&sha256).bind(now)
            .fetch_one(pool).await.map_err(|e| unique_violation(e, "sip username"))?);
        Ok(account)
    }

    pub async fn sip_account(&self, user_id: i64) -> Result<Option<SipAccount>> {
        let sql = "SELECT user_id, sip_username, realm, created_at, updated_at FROM sip_accounts WHERE user_id = $1";
        let account =
            with_pool!(self, pool => sqlx::query_as(sql).bind(user_id).fetch_optional(pool).await?);
        Ok(account)
    }

    /// Removes the user's SIP account; `false` if there was none.
    pub async fn delete_sip_account(&self, user_id: i64) -> Result<bool> {
        let done = with_pool!(self, pool => sqlx::query("DELETE FROM sip_accounts WHERE user_id = $1")
            .bind(user_id).execute(pool).await?.rows_affected());
        Ok(done > 0)
    }

    /// The registrar's credential for `sip_username`: only for an active
    /// user, and only if it was made for `realm`.
    pub async fn sip_credential(
        &self,
        sip_username: &str,
        realm: &str,
    ) -> Result<Option<StoredCredential>> {
        let sql = "SELECT a.user_id, a.realm, a.ha1_md5, a.ha1_sha256 FROM sip_accounts a \
                   JOIN users u ON u.id = a.user_id WHERE a.sip_username = $1 AND u.active = $2";
        let row: Option<(i64, String, String, String)> = with_pool!(self, pool => sqlx::query_as(sql)
            .bind(sip_username).bind(true).fetch_optional(pool).await?);
        Ok(match row {
            Some((user_id, stored_realm, md5, sha256)) if stored_realm == realm => {
                Some(StoredCredential {
                    operator: OperatorId(user_id),
                    ha1: vec![(Algorithm::Md5, md5), (Algorithm::Sha256, sha256)],
                })
            }
            Some((user_id, stored_realm, _, _)) => {
                tracing::warn!(
                    user = user_id,
                    %stored_realm,
                    configured_realm = realm,
                    "a SIP account was set for another realm: set its password again"
                );
                None
            }
            None => None,
        })
    }
}

/// [`SipCredentials`] over the store, for the registrar.
#[derive(Clone, Debug)]
pub struct StoreCredentials {
    pub store: Store,
    /// `sip.registrar.realm`.
    pub realm: String,
}

impl SipCredentials for StoreCredentials {
    fn lookup(&self, username: &str) -> impl Future<Output = Option<StoredCredential>> + Send {
        let store = self.store.clone();
        let realm = self.realm.clone();
        let username = username.to_owned();
        async move {
            match store.sip_credential(&username, &realm).await {
                Ok(found) => found,
                // The REGISTER gets 401, as for an unknown user; the phone
                // retries, and the log says why.
                Err(err) => {
                    tracing::warn!(%err, "SIP credential lookup failed");
                    None
                }
            }
        }
    }
}
