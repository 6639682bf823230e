//! The topic layout: which Pulsar topic carries which runtime topic, and how it is consumed.
//!
//! A runtime topic ([`crate::topics`]) maps to one persistent topic, plus one dead-letter
//! companion:
//!
//! | runtime topic      | Pulsar topic (under `persistent://tenant/namespace/`) | subscription |
//! |--------------------|-------------------------------------------------------|--------------|
//! | `workflow:Billing` | `{prefix}.workflow.Billing`                           | Key_Shared   |
//! | `service:Payment`  | `{prefix}.service.Payment`                            | Shared       |
//! | (dead letters)     | `{prefix}.workflow.Billing-dlq`, `{prefix}.service.Payment-dlq` | read back by a reader |
//!
//! Two topics per workflow and two per service, where Infinitic has twelve per pair: the
//! worker that owns a workflow's state also runs its code (no engine/executor split), and
//! timers and retries are delayed messages on the same topic (no separate delay topics).

/// How a topic's subscription divides messages between the consumers of one subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Routing {
    /// By key (the workflow id): one consumer owns a key at a time, in order.
    KeyShared,
    /// Round robin: any worker of a service can run any task.
    Shared,
}

/// A runtime topic as Pulsar sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TopicLayout {
    /// The runtime's name (`workflow:Billing`).
    pub(crate) name: String,
    /// The full Pulsar name (`persistent://public/default/infinitic.workflow.Billing`).
    pub(crate) pulsar: String,
    /// Its dead-letter companion's full name.
    pub(crate) dead_letters: String,
    /// How its subscription is divided.
    pub(crate) routing: Routing,
}

/// Characters Pulsar accepts in a topic's local name, besides ASCII letters and digits.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '=')
}

/// Writes `part` with every character Pulsar rejects as `%XX` (its UTF-8 bytes).
fn escape(part: &str, out: &mut String) {
    for c in part.chars() {
        if plain(c) && c != '%' {
            out.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
}

impl TopicLayout {
    /// The layout of runtime topic `name` under `namespace` (`tenant/namespace`) and `prefix`.
    pub(crate) fn of(name: &str, namespace: &str, prefix: &str) -> Self {
        // `kind:Name` → `kind.Name`; anything else is escaped whole.
        let mut local = String::new();
        escape(prefix, &mut local);
        local.push('.');
        match name.split_once(':') {
            Some((kind, rest)) => {
                escape(kind, &mut local);
                local.push('.');
                escape(rest, &mut local);
            }
            None => escape(name, &mut local),
        }
        let pulsar = format!("persistent://{namespace}/{local}");
        let routing = if name.starts_with(crate::topics::SERVICE_PREFIX) {
            Routing::Shared
        } else {
            Routing::KeyShared
        };
        Self {
            name: name.to_string(),
            dead_letters: format!("{pulsar}{DEAD_LETTER_SUFFIX}"),
            pulsar,
            routing,
        }
    }
}

/// What a dead-letter companion's name ends with.
pub(crate) const DEAD_LETTER_SUFFIX: &str = "-dlq";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflows_are_keyed_and_services_shared() {
        let w = TopicLayout::of("workflow:Billing", "public/default", "infinitic");
        assert_eq!(
            w.pulsar,
            "persistent://public/default/infinitic.workflow.Billing"
        );
        assert_eq!(
            w.dead_letters,
            "persistent://public/default/infinitic.workflow.Billing-dlq"
        );
        assert_eq!(w.routing, Routing::KeyShared);
        let s = TopicLayout::of("service:Payment", "public/default", "infinitic");
        assert_eq!(
            s.pulsar,
            "persistent://public/default/infinitic.service.Payment"
        );
        assert_eq!(s.routing, Routing::Shared);
    }

    #[test]
    fn characters_pulsar_rejects_are_escaped() {
        let t = TopicLayout::of("workflow:a/b c:%", "t/n", "p");
        assert_eq!(t.pulsar, "persistent://t/n/p.workflow.a%2Fb%20c%3A%25");
    }
}
