//! A subscriber of the tally: one real WebSocket connection (tokio-tungstenite)
//! subscribed to a set of topics, driven by its own task, recording every frame it
//! receives in order. It tracks its position per topic from what arrived, and
//! resubscribes with `since` whenever it connects again, as a client library does.

use std::collections::{HashMap, HashSet};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::{Position, WAIT};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a subscriber saw on one topic, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The answer to a subscribe, `since` given when the subscriber had a position.
    Subscribed {
        since: Option<Position>,
        recovered: Option<bool>,
        reason: Option<String>,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    /// A publication of the steady publisher.
    Message {
        seq: u64,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    /// `missed`: messages may not have arrived.
    Missed {
        reason: String,
        offset: Option<u64>,
        epoch: Option<String>,
    },
    /// The connection ended (cut by the test, or by the server's side).
    Disconnected(String),
    /// Anything else that named the topic (an error frame, a foreign message).
    Unexpected(Value),
}

/// What a subscriber has seen so far, for tests to await.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Highest `seq` received per topic.
    pub last_seq: HashMap<String, u64>,
    /// Every `seq` received per topic.
    pub got: HashMap<String, HashSet<u64>>,
    /// Connections opened so far.
    pub connects: usize,
    /// `subscribed` answers on the current connection.
    pub acked: usize,
    pub connected: bool,
}

impl Progress {
    pub fn seen(&self, topic: &str) -> u64 {
        self.last_seq.get(topic).copied().unwrap_or(0)
    }
}

enum Order {
    /// Drop the socket at once: no close frame, and a reset rather than an orderly
    /// shutdown, as a phone that loses its network does.
    Cut,
    /// Connect to this WebSocket URL and resubscribe.
    Connect(String),
}

pub struct Subscriber {
    pub name: String,
    pub topics: Vec<String>,
    orders: mpsc::UnboundedSender<Order>,
    progress: watch::Receiver<Progress>,
    task: JoinHandle<HashMap<String, Vec<Event>>>,
}

impl Subscriber {
    /// Connects to `url`, subscribes to `topics` and waits until every subscribe
    /// was answered. When the server ends the connection and `fallback` is given,
    /// it connects there at once and resubscribes with `since`.
    pub async fn start(
        name: &str,
        url: String,
        topics: &[&str],
        fallback: Option<String>,
    ) -> Subscriber {
        let (orders, received) = mpsc::unbounded_channel();
        let (progressed, progress) = watch::channel(Progress::default());
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let task = tokio::spawn(run(
            name.to_owned(),
            topics.clone(),
            fallback,
            received,
            progressed,
        ));
        let mut subscriber = Subscriber {
            name: name.to_owned(),
            topics: topics.clone(),
            orders,
            progress,
            task,
        };
        subscriber.connect(url).await;
        subscriber
    }

    pub fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    /// Waits (bounded by [`WAIT`]) until this subscriber's progress satisfies `done`.
    pub async fn wait_for(&mut self, what: &str, done: impl Fn(&Progress) -> bool) {
        let reached = tokio::time::timeout(WAIT, self.progress.wait_for(|p| done(p))).await;
        assert!(
            reached.is_ok_and(|r| r.is_ok()),
            "subscriber {}: {what} not reached within {WAIT:?}; last seqs {:?}",
            self.name,
            self.progress().last_seq
        );
    }

    /// Waits until every topic has reached `seq` (per topic).
    pub async fn wait_seen(&mut self, seqs: &HashMap<String, u64>) {
        let done = |p: &Progress| seqs.iter().all(|(t, s)| p.seen(t) >= *s);
        let reached = tokio::time::timeout(WAIT, self.progress.wait_for(done)).await;
        assert!(
            reached.is_ok_and(|r| r.is_ok()),
            "subscriber {}: not seen {seqs:?} within {WAIT:?}; progress {:?}",
            self.name,
            self.progress().last_seq
        );
    }

    /// Waits (bounded by [`WAIT`]) until each of `seqs` arrived on its topic, and
    /// answers whether they did.
    pub async fn received_all(&mut self, seqs: &HashMap<String, Vec<u64>>) -> bool {
        let done = |p: &Progress| {
            seqs.iter().all(|(t, want)| {
                want.iter()
                    .all(|s| p.got.get(t).is_some_and(|g| g.contains(s)))
            })
        };
        tokio::time::timeout(WAIT, self.progress.wait_for(done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Cuts the connection without a close frame.
    pub async fn cut(&mut self) {
        self.orders.send(Order::Cut).unwrap();
        self.wait_for("disconnected", |p| !p.connected).await;
    }

    /// Connects to `url` and waits until every topic's subscribe was answered.
    pub async fn connect(&mut self, url: String) {
        let connects = self.progress().connects;
        self.orders.send(Order::Connect(url)).unwrap();
        self.wait_for_resubscribed(connects + 1).await;
    }

    /// Waits until the `connects`-th connection is open with every topic answered.
    pub async fn wait_for_resubscribed(&mut self, connects: usize) {
        let topics = self.topics.len();
        self.wait_for(&format!("connection {connects} subscribed"), move |p| {
            p.connects >= connects && p.connected && p.acked >= topics
        })
        .await;
    }

    /// Ends the task and returns what arrived, per topic.
    pub async fn finish(self) -> HashMap<String, Vec<Event>> {
        drop(self.orders);
        self.task.await.expect("subscriber task")
    }
}

struct State {
    name: String,
    topics: Vec<String>,
    fallback: Option<String>,
    positions: HashMap<String, Position>,
    /// The `since` each topic's subscribe on the current connection carried.
    asked: HashMap<String, Option<Position>>,
    events: HashMap<String, Vec<Event>>,
    progressed: watch::Sender<Progress>,
}

async fn run(
    name: String,
    topics: Vec<String>,
    fallback: Option<String>,
    mut orders: mpsc::UnboundedReceiver<Order>,
    progressed: watch::Sender<Progress>,
) -> HashMap<String, Vec<Event>> {
    progressed.send_modify(|p| {
        for t in &topics {
            p.last_seq.insert(t.clone(), 0);
        }
    });
    let mut state = State {
        name,
        events: topics.iter().map(|t| (t.clone(), Vec::new())).collect(),
        topics,
        fallback,
        positions: HashMap::new(),
        asked: HashMap::new(),
        progressed,
    };
    let mut socket: Option<Socket> = None;
    loop {
        let next = async {
            match socket.as_mut() {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            order = orders.recv() => match order {
                None => return state.events,
                Some(Order::Cut) => {
                    if let Some(s) = socket.take() {
                        if let MaybeTlsStream::Plain(tcp) = s.get_ref() {
                            tcp.set_zero_linger().unwrap();
                        }
                        drop(s);
                        state.disconnected("cut by the test");
                    }
                }
                Some(Order::Connect(url)) => socket = Some(state.connect(&url).await),
            },
            frame = next => match frame {
                Some(Ok(Message::Text(text))) => {
                    let frame: Value = serde_json::from_str(&text).expect("JSON text frame");
                    state.record(frame);
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    let why = match &frame {
                        Some(Ok(Message::Close(c))) => format!("closed by the server: {c:?}"),
                        Some(Err(e)) => format!("socket error: {e}"),
                        _ => "socket ended".to_owned(),
                    };
                    socket = None;
                    state.disconnected(&why);
                    if let Some(url) = state.fallback.clone() {
                        socket = Some(state.connect(&url).await);
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

impl State {
    fn disconnected(&mut self, why: &str) {
        for events in self.events.values_mut() {
            events.push(Event::Disconnected(why.to_owned()));
        }
        self.progressed.send_modify(|p| {
            p.connected = false;
            p.acked = 0;
        });
    }

    /// Opens a connection, reads its welcome and sends a subscribe per topic, with
    /// `since` where a position is known. The answers arrive as ordinary frames.
    async fn connect(&mut self, url: &str) -> Socket {
        let (mut socket, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("subscriber {}: handshake within {WAIT:?}", self.name))
            .unwrap_or_else(|e| panic!("subscriber {}: handshake with {url}: {e}", self.name));
        let welcome = loop {
            match tokio::time::timeout(WAIT, socket.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => break serde_json::from_str::<Value>(&t).unwrap(),
                Ok(Some(Ok(_))) => continue,
                other => panic!("subscriber {}: no welcome: {other:?}", self.name),
            }
        };
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        for topic in &self.topics {
            let mut subscribe = json!({"action": "subscribe", "topic": topic, "ref": topic});
            let since = self.positions.get(topic).cloned();
            if let Some(position) = &since {
                subscribe["since"] = json!(position);
            }
            self.asked.insert(topic.clone(), since);
            socket
                .send(Message::Text(subscribe.to_string().into()))
                .await
                .unwrap();
        }
        self.progressed.send_modify(|p| {
            p.connects += 1;
            p.connected = true;
            p.acked = 0;
        });
        socket
    }

    fn record(&mut self, frame: Value) {
        // Answers to a subscribe carry the topic as their `ref`.
        let named = frame["topic"].as_str().or(frame["ref"].as_str());
        let Some(topic) = named
            .filter(|t| self.events.contains_key(*t))
            .map(str::to_owned)
        else {
            for events in self.events.values_mut() {
                events.push(Event::Unexpected(frame.clone()));
            }
            return;
        };
        let offset = frame["offset"].as_u64();
        let epoch = frame["epoch"].as_str().map(str::to_owned);
        let position = offset
            .zip(epoch.clone())
            .map(|(offset, epoch)| Position { offset, epoch });
        let event = match frame["type"].as_str() {
            Some("subscribed") => {
                let recovered = frame["recovered"].as_bool();
                // A recovered subscription continues from the position it asked
                // with; the replay moves it on.
                if recovered != Some(true)
                    && let Some(p) = position
                {
                    self.positions.insert(topic.clone(), p);
                }
                self.progressed.send_modify(|p| p.acked += 1);
                Event::Subscribed {
                    since: self.asked.get(&topic).cloned().flatten(),
                    recovered,
                    reason: frame["reason"].as_str().map(str::to_owned),
                    offset,
                    epoch,
                }
            }
            Some("missed") => {
                if let Some(p) = position {
                    self.positions.insert(topic.clone(), p);
                }
                Event::Missed {
                    reason: frame["reason"].as_str().unwrap_or_default().to_owned(),
                    offset,
                    epoch,
                }
            }
            Some("m") => {
                let seq = frame["seq"].as_u64().expect("seq in the body");
                if let Some(p) = position {
                    self.positions.insert(topic.clone(), p);
                }
                self.progressed.send_modify(|p| {
                    let last = p.last_seq.entry(topic.clone()).or_default();
                    *last = (*last).max(seq);
                    p.got.entry(topic.clone()).or_default().insert(seq);
                });
                Event::Message { seq, offset, epoch }
            }
            _ => Event::Unexpected(frame),
        };
        self.events
            .get_mut(&topic)
            .expect("a subscribed topic")
            .push(event);
    }
}
