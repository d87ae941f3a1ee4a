//! Callbacks placed by the server (issue 5, point 5): the async shell
//! around [`ccu_channels::call::callback::Callback`].
//!
//! When the router offers a callback conversation that no call on this
//! node holds, the node that has the operator's registered phones rings
//! them; once the operator answers and the router gives them the
//! conversation, it calls the citizen through a trunk's `outbound` proxy
//! and bridges the two. What becomes of the conversation:
//!
//! | how it went                       | the conversation                         |
//! |-----------------------------------|------------------------------------------|
//! | the phone refused or rang out     | the offer's outcome (as for a call)      |
//! | they talked                       | completed (wrap-up as configured)        |
//! | the citizen busy, no answer, fail | waits `retry_seconds`, offered again; after `attempts`, `callback_failed` and completed |
//! | the operator hung up first        | offered again at once (not an attempt)   |
//!
//! Without a trunk `outbound`, or without a number, nothing is placed: the
//! console shows the callback offer and the operator dials the number.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use ccu_channels::call::CallOutput;
use ccu_channels::call::callback::{
    Callback, CallbackConfig, CallbackEnd, CallbackInput, CallbackOutput, CallbackSetup,
};
use ccu_channels::media::relay::Leg;
use ccu_channels::sip::Uri;
use ccu_channels::sip::dialog::DialogEvent;
use ccu_channels::sip::digest::ClientCredentials;
use ccu_channels::sip::endpoint::{ServerTxHandle, Target};
use ccu_channels::sip::header::Address;
use ccu_channels::sip::message::HeaderName;
use ccu_channels::sip::sdp::LocalMedia;
use ccu_channels::sip::transport::TransportKind;
use ccu_channels::sip::trunk::outbound_proxy;
use ccu_channels::sip::uri::{Host, SipUri};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

use super::{
    ActiveCall, CallContext, Msg, Voice, client_event, lock, random_start, random_u64, send_rtp,
};
use crate::bus::BusEvent;
use crate::store::{CallbackPlan, Scope};

/// Where a callback goes out: the trunk, its proxy's address, what the
/// Request-URI names, and the account for the carrier's challenge.
struct Outbound {
    trunk: String,
    address: SocketAddr,
    host: Host,
    port: u16,
    credentials: Option<ClientCredentials>,
}

/// How a callback task ended, for what becomes of its conversation.
pub(super) struct CallbackDone {
    context: CallContext,
    plan: CallbackPlan,
    end: CallbackEnd,
    /// The conversation left this operator meanwhile (the console, another
    /// operator): nothing to do with it.
    taken_away: bool,
}

/// One callback offer, as the bus brought it.
pub(super) struct CallbackOffer {
    pub conversation: i64,
    pub offer: u64,
    pub operator: i64,
    /// Unix ms.
    pub expires_at: i64,
}

impl Voice {
    /// Whether any trunk takes ccu's own calls.
    fn can_call_out(&self) -> bool {
        let sip = &self.0.state.settings.sip;
        sip.trunks.iter().any(|t| t.outbound.is_some())
    }

    /// A callback offer for a conversation no call here holds: placed
    /// here if this node has the operator's phones and a trunk takes our
    /// calls. Whether it was taken (otherwise the offer goes on as any
    /// other: the console shows it). One task per offer (ring-all offers a
    /// callback to several operators at once).
    pub(super) fn start_callback(&self, offer: CallbackOffer) -> bool {
        let operator = ccu_channels::sip::registrar::OperatorId(offer.operator);
        if !self.can_call_out()
            || offer.expires_at <= crate::now_ms()
            || self.0.sip.bindings(operator).is_empty()
            || lock(&self.0.conversations)
                .calls
                .contains_key(&offer.conversation)
        {
            return false;
        }
        let voice = &self.0.state.settings.voice;
        if self.0.active.fetch_add(1, Ordering::AcqRel) >= voice.max_calls {
            self.0.active.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                conversation = offer.conversation,
                "callback not placed: voice.max_calls reached"
            );
            return false;
        }
        let place = ActiveCall(self.0.clone());
        metrics::gauge!("ccu_voice_calls").set(self.calls() as f64);
        let (tx, rx) = mpsc::channel(256);
        {
            let mut callbacks = lock(&self.0.callbacks);
            let tasks = callbacks.entry(offer.conversation).or_default();
            if tasks.iter().any(|(o, _)| *o == offer.offer) {
                return true;
            }
            tasks.push((offer.offer, tx.clone()));
        }
        let voice = self.clone();
        tokio::spawn(async move {
            let _place = place;
            let (conversation, offer_id) = (offer.conversation, offer.offer);
            let ended = voice.run_callback(offer, tx.clone(), rx).await;
            // Forgotten before the conversation moves on, so that its next
            // offer (a retry at once) starts a new callback here.
            lock(&voice.0.calls).retain(|_, s| !s.same_channel(&tx));
            {
                let mut callbacks = lock(&voice.0.callbacks);
                if let Some(tasks) = callbacks.get_mut(&conversation) {
                    tasks.retain(|(o, _)| *o != offer_id);
                    if tasks.is_empty() {
                        callbacks.remove(&conversation);
                    }
                }
            }
            match ended {
                Ok(ended) => voice.callback_ended(ended).await,
                Err(error) => {
                    // The phone never rang: the console's offer stands.
                    metrics::counter!("ccu_voice_callbacks_total", "result" => "error")
                        .increment(1);
                    tracing::warn!(conversation, "callback not placed: {error:#}");
                }
            }
        });
        true
    }

    /// What the bus says of a conversation with callbacks here, to them:
    /// an offer withdrawn (by its id), the assignment (the console's
    /// accept, or someone else's), a requeue (the console declined or
    /// transferred it), an end from the console.
    pub(super) fn notify_callbacks(&self, event: &BusEvent) {
        let (conversation, offer, msg): (i64, Option<u64>, fn() -> Msg) = match event {
            BusEvent::OfferWithdrawn {
                conversation_id,
                offer_id,
                ..
            } => (*conversation_id, Some(*offer_id), || Msg::Withdraw),
            BusEvent::ConversationChanged {
                conversation_id,
                state,
                operator_id,
                ..
            } if state == "assigned" => {
                let tasks = lock(&self.0.callbacks);
                for (_, task) in tasks.get(conversation_id).into_iter().flatten() {
                    let _ = task.try_send(Msg::Assigned {
                        operator: *operator_id,
                    });
                }
                return;
            }
            BusEvent::ConversationChanged {
                conversation_id,
                state,
                ..
            } if state == "queued" => (*conversation_id, None, || Msg::Requeued),
            BusEvent::ConversationEnded {
                conversation_id,
                by,
            } if by != "citizen" && by != "voice" => (*conversation_id, None, || Msg::HangUp),
            _ => return,
        };
        let tasks = lock(&self.0.callbacks);
        for (task_offer, task) in tasks.get(&conversation).into_iter().flatten() {
            if offer.is_none_or(|o| o == *task_offer) {
                let _ = task.try_send(msg());
            }
        }
    }

    /// The trunk to call through: the one the citizen's call came in on,
    /// if it takes our calls, else the first that does; its proxy's address.
    async fn outbound(&self, plan: &CallbackPlan) -> anyhow::Result<Outbound> {
        let trunks = &self.0.state.settings.sip.trunks;
        let trunk = trunks
            .iter()
            .filter(|t| t.outbound.is_some())
            .find(|t| Some(&t.name) == plan.trunk.as_ref())
            .or_else(|| trunks.iter().find(|t| t.outbound.is_some()))
            .context("no trunk with an outbound")?;
        let outbound = trunk.outbound.as_deref().unwrap_or_default();
        let (host, port) = outbound_proxy(outbound).map_err(anyhow::Error::msg)?;
        let address = tokio::net::lookup_host((host.as_str(), port))
            .await
            .with_context(|| format!("resolving {outbound}"))?
            // Of the SIP endpoint's address family: it sends from that socket.
            .find(|a| a.is_ipv4() == self.0.sip.udp_addr().is_ipv4())
            .with_context(|| format!("{outbound} has no address of the SIP endpoint's family"))?;
        let credentials = match (&trunk.outbound_username, &trunk.outbound_password) {
            (Some(username), Some(password)) => Some(ClientCredentials {
                username: username.clone(),
                password: password.clone(),
            }),
            _ => None,
        };
        // The Request-URI names the proxy as configured (a carrier routes by
        // its domain), the datagrams go to its address.
        let host = match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => Host::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => Host::Ipv6(ip),
            Err(_) => Host::Domain(host),
        };
        Ok(Outbound {
            trunk: trunk.name.clone(),
            address,
            host,
            port,
            credentials,
        })
    }

    async fn run_callback(
        &self,
        offer: CallbackOffer,
        me: mpsc::Sender<Msg>,
        mut rx: mpsc::Receiver<Msg>,
    ) -> anyhow::Result<CallbackDone> {
        let shared = &self.0;
        let settings = &shared.state.settings;
        let conversation = offer.conversation;
        let offer_operator = offer.operator;
        let detail = shared
            .state
            .store
            .get_conversation(&Scope::All, conversation)
            .await?
            .context("the conversation is gone")?;
        let plan = detail
            .callback_plan()
            .context("no number to call back (the console shows the offer)")?;
        let Outbound {
            trunk,
            address: proxy,
            host: proxy_host,
            port: proxy_port,
            credentials: trunk_credentials,
        } = self.outbound(&plan).await?;
        let (citizen_socket, citizen_sender) = self.bind_media().await?;
        let (phone_socket, phone_sender) = self.bind_media().await?;
        let citizen_call_id = format!("{:016x}@ccu", random_u64());
        let queue = detail.conversation.queue_id.clone();
        let mut context = CallContext {
            voice: self.clone(),
            me,
            caller_call_id: citizen_call_id.clone(),
            caller_target: Target::Udp(proxy),
            phones: HashMap::new(),
            vias: HashMap::new(),
            conversation: Some(conversation),
            queue: queue.clone(),
            caller_number: plan.number.clone(),
            operator: Some((offer.offer, offer.operator)),
            answered: false,
            voicemail: false,
            voice_message: false,
            kept: false,
            ringing: Vec::new(),
            pending: Vec::new(),
        };
        lock(&shared.calls).insert(citizen_call_id.clone(), context.me.clone());
        let devices = context.devices(offer.operator);
        let dialog = self.dialog_config(TransportKind::Udp);
        let host = match &dialog.contact {
            Uri::Sip(sip) => sip.host.clone(),
            Uri::Other { .. } => Host::Domain("invalid".into()),
        };
        let called = plan.called.clone().unwrap_or_else(|| {
            settings
                .sip
                .numbers
                .keys()
                .next()
                .cloned()
                .unwrap_or_default()
        });
        // RFC 3261 §19.1.1: a telephone number in the user part, `user=phone`.
        let mut citizen = SipUri::new(Some(&plan.number), proxy_host);
        citizen.port = Some(proxy_port);
        citizen.params.push(ccu_channels::sip::uri::Param::new(
            "user",
            Some("phone".into()),
        ));
        let display = Address {
            display_name: Some(format!("Richiamata {} {queue}", plan.number)),
            uri: Uri::Sip(SipUri::new(Some(&plan.number), host.clone())),
            params: Vec::new(),
        };
        let ring_for = u64::try_from(offer.expires_at - crate::now_ms())
            .ok()
            .map(Duration::from_millis);
        let config = CallbackConfig {
            phone_dialog: dialog.clone(),
            citizen_dialog: dialog,
            relay: settings.voice.media.relay,
            ring_timeout: Duration::from_secs(settings.voice.ring_timeout_seconds),
            citizen_ring_timeout: Duration::from_secs(settings.voice.callback.ring_seconds),
            music: settings.voice.media.announcer.music.clone(),
        };
        let setup = CallbackSetup {
            offer: offer.offer,
            operator: offer.operator,
            conversation,
            devices,
            ring_for,
            display,
            phone_headers: vec![
                (HeaderName::Other("X-CCU-Queue".into()), queue.clone()),
                (
                    HeaderName::Other("X-CCU-Conversation".into()),
                    conversation.to_string(),
                ),
                (
                    HeaderName::Other("X-CCU-Callback".into()),
                    plan.number.clone(),
                ),
            ],
            citizen: Uri::Sip(citizen),
            caller_id: Address::new(Uri::Sip(SipUri::new(Some(&called), host))),
            citizen_call_id: citizen_call_id.clone(),
            citizen_tag: format!("{:012x}", random_u64() >> 16),
            trunk_ip: proxy.ip(),
            trunk_credentials,
            phone_media: LocalMedia::new(
                shared.media_ip,
                phone_socket.local_addr()?.port(),
                random_u64() >> 2,
            ),
            citizen_media: LocalMedia::new(
                shared.media_ip,
                citizen_socket.local_addr()?.port(),
                random_u64() >> 2,
            ),
            citizen_stream: random_start(),
            operator_stream: random_start(),
            player_stream: random_start(),
            library: shared.library.clone(),
            language: detail.conversation.language.clone(),
        };
        tracing::info!(conversation, offer = offer.offer, operator = offer.operator, %trunk, "callback: ringing the operator");
        context
            .record_event(
                "callback_started",
                Some(offer.operator),
                serde_json::json!({
                    "call_id": citizen_call_id,
                    "number": plan.number,
                    "trunk": trunk,
                    "proxy": proxy.to_string(),
                    "attempt": plan.failed_attempts + 1,
                }),
            )
            .await;
        let mut callback = Callback::new(Instant::now(), config, setup);
        // The console accepted it for this operator (the phone may still ring).
        let mut assigned_here = false;
        let mut taken_away = false;
        let mut handles: HashMap<(String, u32, String), ServerTxHandle> = HashMap::new();
        let mut shutting_down = false;
        let mut end = None;
        let mut buf_a = vec![0_u8; 2048];
        let mut buf_b = vec![0_u8; 2048];
        loop {
            let now = Instant::now();
            while let Some(output) = callback.poll(now) {
                match output {
                    CallbackOutput::Ended(how) => end = Some(how),
                    CallbackOutput::Call(CallOutput::Rtp { leg, to, bytes }) => {
                        send_rtp(leg, to, &bytes, &citizen_sender, &phone_sender);
                    }
                    CallbackOutput::Call(CallOutput::Sip { leg, send }) => {
                        context.send_sip(leg, send, &mut handles).await;
                    }
                    CallbackOutput::Call(CallOutput::OfferOutcome { offer, outcome }) => {
                        let accepted = if outcome == ccu_channels::call::OfferOutcome::Accepted
                            && assigned_here
                        {
                            true
                        } else {
                            context.offer_outcome(offer, outcome).await
                                || (outcome == ccu_channels::call::OfferOutcome::Accepted
                                    && self.assigned_to(conversation, offer_operator).await)
                        };
                        // Only what the router gave counts for the end.
                        context.answered = accepted;
                        if outcome == ccu_channels::call::OfferOutcome::Accepted {
                            callback.handle(Instant::now(), CallbackInput::Accepted(accepted));
                        }
                    }
                    CallbackOutput::Call(CallOutput::Record(record)) => {
                        context.record(record).await
                    }
                    CallbackOutput::Call(_) => {}
                }
            }
            if callback.is_done() {
                break;
            }
            let deadline = callback
                .next_deadline()
                .map(tokio::time::Instant::from_std)
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    let now = Instant::now();
                    match msg {
                        Msg::Request(incoming) => {
                            let leg = context.request_leg(&incoming, &mut handles, |id| callback.phone_leg(id)).await;
                            if let Some(leg) = leg {
                                callback.handle(now, CallbackInput::Sip { leg, event: DialogEvent::Request(&incoming.request) });
                            }
                        }
                        Msg::Client { leg, method, outcome } => {
                            callback.handle(now, CallbackInput::Sip { leg, event: client_event(method, &outcome) });
                        }
                        Msg::Withdraw => callback.handle(now, CallbackInput::WithdrawOffer),
                        Msg::HangUp => callback.handle(now, CallbackInput::HangUp),
                        Msg::Assigned { operator } if operator == Some(offer_operator) => {
                            assigned_here = true;
                        }
                        // Someone else has it now, or the console declined or
                        // transferred it: not this callback's any more.
                        Msg::Assigned { .. } | Msg::Requeued => {
                            taken_away |= !callback.is_ringing();
                            callback.handle(now, CallbackInput::TakenAway);
                        }
                        // Positions, hold and offers of the call channel.
                        _ => {}
                    }
                }
                received = citizen_socket.recv_from(&mut buf_a) => {
                    if let Ok((n, from)) = received {
                        callback.handle(Instant::now(), CallbackInput::Rtp { leg: Leg::A, from, bytes: &buf_a[..n] });
                    }
                }
                received = phone_socket.recv_from(&mut buf_b) => {
                    if let Ok((n, from)) = received {
                        callback.handle(Instant::now(), CallbackInput::Rtp { leg: Leg::B, from, bytes: &buf_b[..n] });
                    }
                }
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    callback.handle(Instant::now(), CallbackInput::HangUp);
                }
            }
        }
        let end = end.unwrap_or(CallbackEnd::Interrupted(
            ccu_channels::call::HangupCause::Console,
        ));
        super::export_relay_metrics(callback.relay());
        Ok(CallbackDone {
            context,
            plan,
            end,
            taken_away,
        })
    }

    /// Whether the conversation is assigned to `operator` in the store (the
    /// console accepted it a moment before the phone answered).
    async fn assigned_to(&self, conversation: i64, operator: i64) -> bool {
        let detail = self
            .0
            .state
            .store
            .get_conversation(&Scope::All, conversation)
            .await;
        matches!(detail, Ok(Some(d)) if d.conversation.state == crate::store::ConversationState::Assigned
            && d.conversation.operator_id == Some(operator))
    }

    /// What becomes of the conversation (see the module's table).
    async fn callback_ended(&self, done: CallbackDone) {
        let shared = &self.0;
        let CallbackDone {
            context,
            plan,
            end,
            taken_away,
        } = done;
        let (Some(conversation), Some((_, operator))) = (context.conversation, context.operator)
        else {
            return;
        };
        let result = match end {
            _ if taken_away => "taken_away",
            CallbackEnd::NotTaken | CallbackEnd::Refused => "not_taken",
            CallbackEnd::Talked(_) => "talked",
            CallbackEnd::NotReached(how) if !how.is_citizens() => "trunk_failed",
            CallbackEnd::NotReached(_) => "not_reached",
            CallbackEnd::Interrupted(_) => "interrupted",
        };
        metrics::counter!("ccu_voice_callbacks_total", "result" => result).increment(1);
        tracing::info!(conversation, ?end, taken_away, "callback ended");
        if taken_away {
            // Transferred or taken by someone else meanwhile: theirs now.
            return;
        }
        let router = shared.state.hub.router();
        let now = crate::now_ms();
        let outcome = match end {
            CallbackEnd::NotTaken | CallbackEnd::Refused => return,
            CallbackEnd::Talked(_) => {
                let completed = shared.state.hub.complete(conversation, operator).await;
                shared.state.hub.announce_end(conversation, "voice").await;
                completed.map(|_| ()).map_err(anyhow::Error::from)
            }
            CallbackEnd::NotReached(how) => {
                // The trunk's failures are not the citizen's attempts, but
                // they too have an end.
                let attempts = plan.failed_attempts + u32::from(how.is_citizens());
                let trunk_failures = plan.trunk_failures + u32::from(!how.is_citizens());
                let callback = &shared.state.settings.voice.callback;
                let given_up = if how.is_citizens() {
                    attempts >= callback.attempts
                } else {
                    trunk_failures >= callback.trunk_failures
                };
                if !how.is_citizens() {
                    tracing::error!(
                        conversation,
                        trunk_failures,
                        status = ?how.status(),
                        "callback: the trunk failed the call (check sip.trunks outbound and credentials)"
                    );
                }
                if given_up && self.assigned_to(conversation, operator).await {
                    // Given up: recorded, and the operator's conversation
                    // ends (its wrap-up, if any, is for a note).
                    let stored = shared
                        .state
                        .store
                        .append_event(
                            conversation,
                            now,
                            "callback_failed",
                            Some(&context.queue),
                            Some(operator),
                            &serde_json::json!({
                                "attempts": attempts,
                                "trunk_failures": trunk_failures,
                                "result": how.as_str(),
                            }),
                        )
                        .await;
                    match stored {
                        Ok(_) => {
                            let completed = shared.state.hub.complete(conversation, operator).await;
                            shared.state.hub.announce_end(conversation, "voice").await;
                            completed.map(|_| ()).map_err(anyhow::Error::from)
                        }
                        Err(error) => Err(error.into()),
                    }
                } else {
                    let retry_ms = i64::try_from(callback.retry_seconds.saturating_mul(1000))
                        .unwrap_or(i64::MAX);
                    router
                        .callback_retry(conversation, operator, now.saturating_add(retry_ms))
                        .await
                        .map_err(anyhow::Error::from)
                }
            }
            // The operator (or a stop) cut it before the citizen answered:
            // not the citizen's attempt, offered again at once, if the
            // router had given it to the operator.
            CallbackEnd::Interrupted(_) if context.answered => router
                .callback_retry(conversation, operator, now)
                .await
                .map_err(anyhow::Error::from),
            CallbackEnd::Interrupted(_) => Ok(()),
        };
        if let Err(error) = outcome {
            tracing::warn!(conversation, ?end, "after the callback: {error:#}");
        }
    }
}
