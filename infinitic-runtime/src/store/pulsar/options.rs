//! What a [`super::PulsarTransport`] connects to and how it behaves.

use std::path::PathBuf;
use std::time::Duration;

/// Settings of a [`super::PulsarTransport`]. Build them with [`PulsarOptions::new`] and the
/// `with_…` methods; every field is public for configuration by file.
///
/// ```
/// use infinitic_runtime::store::pulsar::PulsarOptions;
/// use std::time::Duration;
/// let options = PulsarOptions::new("pulsar+ssl://broker.example:6651")
///     .with_token("eyJhbGciOi...")
///     .with_tls_ca("/etc/ssl/pulsar-ca.pem")
///     .with_subscription("billing")
///     .with_startup_timeout(Duration::from_secs(5));
/// assert_eq!(options.subscription, "billing");
/// ```
#[derive(Clone)]
pub struct PulsarOptions {
    /// The broker's service URL: `pulsar://host:6650`, or `pulsar+ssl://host:6651` for TLS.
    pub url: String,
    /// A JWT for the broker's token authentication (`AuthenticationProviderToken`).
    pub token: Option<String>,
    /// A PEM file of the certificate authority that signed the broker's TLS certificate
    /// (with a `pulsar+ssl://` URL); the system's roots are used when unset.
    pub tls_ca: Option<PathBuf>,
    /// Accept a broker certificate that does not verify (tests against self-signed brokers).
    pub tls_allow_insecure: bool,
    /// The subscription every worker of one deployment shares (one per deployment, not per
    /// process: the broker divides its messages between the processes).
    pub subscription: String,
    /// Tenant and namespace of the topics, `tenant/namespace`.
    pub namespace: String,
    /// First segment of every topic name, so deployments can share a namespace.
    pub topic_prefix: String,
    /// How long [`super::PulsarTransport::connect`] may take before it gives up with a clear
    /// error (an unreachable broker, a refused token).
    pub startup_timeout: Duration,
    /// How long one publish or consumer operation may take once connected.
    pub operation_timeout: Duration,
    /// Messages published and not yet confirmed by the broker, at most (back-pressure: a
    /// publish waits for room).
    pub max_pending_sends: usize,
    /// Messages received from the broker and not yet taken by [`crate::store::Transport::receive`],
    /// at most per topic (beyond it the consumer stops asking the broker for more).
    pub receive_buffer: usize,
    /// The broker's maximum message size (`maxMessageSize`, 5 MB by default): larger
    /// messages are refused before anything is sent. Headroom for the message metadata is
    /// taken off this number.
    pub broker_max_message_bytes: usize,
}

impl std::fmt::Debug for PulsarOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarOptions")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls_ca", &self.tls_ca)
            .field("tls_allow_insecure", &self.tls_allow_insecure)
            .field("subscription", &self.subscription)
            .field("namespace", &self.namespace)
            .field("topic_prefix", &self.topic_prefix)
            .field("startup_timeout", &self.startup_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("max_pending_sends", &self.max_pending_sends)
            .field("receive_buffer", &self.receive_buffer)
            .field("broker_max_message_bytes", &self.broker_max_message_bytes)
            .finish()
    }
}

/// Room kept for a message's metadata (key, properties, ids) under the broker's limit.
pub(crate) const METADATA_HEADROOM: usize = 16 * 1024;

impl PulsarOptions {
    /// Defaults for a broker at `url`: no authentication, subscription `infinitic`, namespace
    /// `public/default`, prefix `infinitic`, 10 s to connect, 30 s per operation, 1,000
    /// pending sends, 1,000 buffered messages per topic, the broker's default 5 MB limit.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            tls_ca: None,
            tls_allow_insecure: false,
            subscription: "infinitic".into(),
            namespace: "public/default".into(),
            topic_prefix: "infinitic".into(),
            startup_timeout: Duration::from_secs(10),
            operation_timeout: Duration::from_secs(30),
            max_pending_sends: 1000,
            receive_buffer: 1000,
            broker_max_message_bytes: 5 * 1024 * 1024,
        }
    }

    /// Authenticates with this token.
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Verifies the broker's TLS certificate with this CA (PEM).
    pub fn with_tls_ca(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca = Some(path.into());
        self
    }

    /// Names the shared subscription.
    pub fn with_subscription(mut self, subscription: impl Into<String>) -> Self {
        self.subscription = subscription.into();
        self
    }

    /// Puts the topics under this prefix.
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// Gives up connecting after this long.
    pub fn with_startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// The largest message (payload plus key) accepted.
    pub fn max_message_bytes(&self) -> usize {
        self.broker_max_message_bytes
            .saturating_sub(METADATA_HEADROOM)
    }
}
