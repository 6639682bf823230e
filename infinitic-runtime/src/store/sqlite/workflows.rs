//! The workflows' SQL: compare-and-set transitions with their history, outbox and consumed
//! message, and loading an instance (reporting what of a damaged row could be read).

use super::queue::insert_messages;
use super::writer::Effects;
use super::{db, millis, sql_type};
use crate::store::encoding::{decode_events, decode_report_to, Columns};
use crate::store::{
    DeliveryId, Outgoing, StoreError, StoredWorkflow, Transition, WorkflowHeader, WorkflowState,
};
use infinitic_core::{decode, Generation, HistoryEvent, Timestamp, WorkflowId};
use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension};

/// A transition that must not apply: roll back what it did so far.
#[derive(Debug)]
pub(super) struct Conflict;

/// A transition with its values encoded for their columns.
pub(super) struct Encoded {
    pub(super) workflow_id: WorkflowId,
    pub(super) expected_version: u64,
    /// With its encoded parent step.
    pub(super) header: Option<(WorkflowHeader, Option<Vec<u8>>)>,
    pub(super) state: Vec<u8>,
    pub(super) is_final: bool,
    /// The appended events as one value; `None` when nothing is appended.
    pub(super) events: Option<Vec<u8>>,
    pub(super) outbox: Vec<Outgoing>,
    pub(super) consumed: Option<DeliveryId>,
    pub(super) dead_letter: Option<String>,
    /// The clients' response topics, encoded, when the transition replaces them.
    pub(super) report_to: Option<Vec<u8>>,
}

impl Encoded {
    pub(super) fn new(t: Transition) -> Result<Self, StoreError> {
        let Columns {
            state,
            parent,
            events,
            report_to,
        } = Columns::of(&t)?;
        Ok(Self {
            state,
            is_final: t.state.is_final(),
            workflow_id: t.workflow_id,
            expected_version: t.expected_version,
            header: t.header.map(|header| (header, parent)),
            events,
            outbox: t.outbox,
            consumed: t.consumed.as_ref().map(|c| c.delivery),
            dead_letter: t.dead_letter,
            report_to,
        })
    }
}

/// Applies one transition; `false` when its compare-and-set fails (then nothing of it was
/// written: both checks come before the first write).
pub(super) fn apply_transition(
    c: &Connection,
    effects: &Effects,
    t: &Encoded,
) -> Result<bool, StoreError> {
    match try_apply(c, effects, t)? {
        Ok(()) => {
            if t.is_final {
                effects.finished.borrow_mut().push(t.workflow_id.clone());
            }
            Ok(true)
        }
        Err(Conflict) => Ok(false),
    }
}

pub(super) fn try_apply(
    c: &Connection,
    effects: &Effects,
    t: &Encoded,
) -> Result<Result<(), Conflict>, StoreError> {
    let id = t.workflow_id.as_str();
    let state = &t.state;
    let now = millis(effects.now.get());
    let expected = i64::try_from(t.expected_version).unwrap_or(i64::MAX);
    if t.expected_version == 0 {
        // The consumed message must still be there (not applied by another consumer). Checked
        // before the first write; creating an instance is rare enough for its own statement.
        if let Some(delivery) = t.consumed {
            let present = c
                .prepare_cached("SELECT 1 FROM queue WHERE id = ?1")
                .map_err(db)?
                .exists([delivery])
                .map_err(db)?;
            if !present {
                return Ok(Err(Conflict));
            }
        }
        let Some((header, parent)) = &t.header else {
            return Err(StoreError::Database(format!(
                "creating workflow {id} needs its header"
            )));
        };
        let inserted = c
            .prepare_cached(
                "INSERT INTO workflows (id, workflow, method, input, started_at, parent, state,
                                        version, updated_at, generation, report_to)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?10)
                 ON CONFLICT (id) DO NOTHING",
            )
            .map_err(db)?
            .execute(params![
                id,
                header.workflow,
                header.method,
                header.input,
                millis(header.started_at),
                parent,
                state,
                now,
                header.generation.0,
                t.report_to
            ])
            .map_err(db)?;
        if inserted == 0 {
            return Ok(Err(Conflict));
        }
    } else {
        // One statement checks both conditions before writing: the version (compare-and-set)
        // and that the consumed message is still there (not applied by another consumer).
        // No RETURNING: SQLite builds a temporary table for it, which showed in profiles.
        let updated = c
            .prepare_cached(
                "UPDATE workflows SET state = ?1, version = version + 1, updated_at = ?2,
                        started_at = coalesce(?4, started_at),
                        report_to = coalesce(?7, report_to)
                 WHERE id = ?3 AND version = ?5
                   AND (?6 IS NULL OR EXISTS (SELECT 1 FROM queue WHERE id = ?6))",
            )
            .map_err(db)?
            .execute(params![
                state,
                now,
                id,
                t.header.as_ref().map(|(h, _)| millis(h.started_at)),
                expected,
                t.consumed,
                t.report_to
            ])
            .map_err(db)?;
        if updated == 0 {
            return Ok(Err(Conflict));
        }
    }
    if let (Some(delivery), Some(reason)) = (t.consumed, &t.dead_letter) {
        c.prepare_cached(
            "INSERT INTO dead_letters (topic, key, payload, reason, at)
             SELECT topic, key, payload, ?1, ?2 FROM queue WHERE id = ?3",
        )
        .map_err(db)?
        .execute(params![reason, now, delivery])
        .map_err(db)?;
    }
    if let Some(delivery) = t.consumed {
        let deleted = c
            .prepare_cached("DELETE FROM queue WHERE id = ?1")
            .map_err(db)?
            .execute([delivery])
            .map_err(db)?;
        if deleted == 0 {
            // Checked present before the first write, in this same transaction: cannot happen.
            return Err(StoreError::Database(format!(
                "message {delivery} vanished while workflow {id} consumed it"
            )));
        }
    }
    if let Some(bytes) = &t.events {
        c.prepare_cached("INSERT INTO history (workflow_id, seq, events) VALUES (?1, ?2, ?3)")
            .map_err(db)?
            .execute(params![id, expected, bytes])
            .map_err(db)?;
    }
    insert_messages(c, effects, &t.outbox).map(Ok)
}

pub(super) fn load(
    c: &Connection,
    id: &WorkflowId,
    with_history: bool,
) -> Result<Option<StoredWorkflow>, StoreError> {
    let row = c
        .prepare_cached(
            "SELECT workflow, method, input, started_at, parent, state, version, generation,
                    report_to
             FROM workflows WHERE id = ?1",
        )
        .map_err(db)?
        .query_row([id.as_str()], |r| {
            (0..9)
                .map(|i| r.get::<_, Value>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .optional()
        .map_err(db)?;
    let Some(row) = row else {
        return Ok(None);
    };
    // A damaged row is reported with as much as could be read, so a worker can park it.
    let version = match row[6] {
        Value::Integer(v) => u64::try_from(v).ok(),
        _ => None,
    };
    let state: Option<WorkflowState> = match &row[5] {
        Value::Blob(bytes) => decode(bytes).ok(),
        _ => None,
    };
    let undecodable = |what: &str, reason: String| StoreError::Undecodable {
        id: id.clone(),
        version,
        state: state.clone(),
        what: what.into(),
        reason,
    };
    let text = |index: usize, what: &str| match &row[index] {
        Value::Text(text) => Ok(text.clone()),
        other => Err(undecodable(
            what,
            format!("{} is not TEXT", sql_type(other.data_type())),
        )),
    };
    let blob = |index: usize, what: &str| match &row[index] {
        Value::Blob(bytes) => Ok(bytes.clone()),
        other => Err(undecodable(
            what,
            format!("{} is not a BLOB", sql_type(other.data_type())),
        )),
    };
    let workflow = text(0, "workflow name")?;
    let method = text(1, "method name")?;
    let input = blob(2, "input")?;
    let started_at = match row[3] {
        Value::Integer(t) => Timestamp::from_millis(u64::try_from(t).unwrap_or(0)),
        ref other => {
            return Err(undecodable(
                "start time",
                format!("{} is not INTEGER", sql_type(other.data_type())),
            ))
        }
    };
    let parent = match &row[4] {
        Value::Null => None,
        Value::Blob(bytes) => {
            Some(decode(bytes).map_err(|e| undecodable("parent", e.to_string()))?)
        }
        other => {
            return Err(undecodable(
                "parent",
                format!("{} is not a BLOB", sql_type(other.data_type())),
            ))
        }
    };
    let state = match state.clone() {
        Some(state) => state,
        None => {
            let reason = match blob(5, "state") {
                Ok(bytes) => decode::<WorkflowState>(&bytes)
                    .err()
                    .map_or_else(String::new, |e| e.to_string()),
                Err(e) => return Err(e),
            };
            return Err(undecodable("state", reason));
        }
    };
    let generation = match row[7] {
        Value::Integer(g) => Generation(u32::try_from(g).unwrap_or(u32::MAX)),
        ref other => {
            let found = sql_type(other.data_type());
            return Err(undecodable("generation", format!("{found} is not INTEGER")));
        }
    };
    let report_to = match &row[8] {
        Value::Null => Vec::new(),
        Value::Blob(bytes) => decode_report_to(Some(bytes))
            .map_err(|e| undecodable("response topics", e.to_string()))?,
        other => {
            let found = sql_type(other.data_type());
            return Err(undecodable(
                "response topics",
                format!("{found} is not a BLOB"),
            ));
        }
    };
    let Some(version) = version else {
        return Err(undecodable(
            "version",
            format!("{} is not INTEGER", sql_type(row[6].data_type())),
        ));
    };
    let history = if with_history {
        let mut select = c
            .prepare_cached("SELECT seq, events FROM history WHERE workflow_id = ?1 ORDER BY seq")
            .map_err(db)?;
        let rows = select
            .query_map([id.as_str()], |r| {
                Ok((r.get::<_, Value>(0)?, r.get::<_, Value>(1)?))
            })
            .map_err(db)?;
        let mut events = Vec::new();
        for row in rows {
            let (seq, bytes) = row.map_err(db)?;
            let what = format!("history row {seq:?}");
            let Value::Blob(bytes) = bytes else {
                return Err(undecodable(
                    &what,
                    format!("{} is not a BLOB", sql_type(bytes.data_type())),
                ));
            };
            let batch: Vec<HistoryEvent> =
                decode_events(&bytes).map_err(|e| undecodable(&what, e.to_string()))?;
            events.extend(batch);
        }
        events
    } else {
        Vec::new()
    };
    Ok(Some(StoredWorkflow {
        id: id.clone(),
        header: WorkflowHeader {
            generation,
            workflow,
            method,
            input,
            started_at,
            parent,
        },
        state,
        version,
        history,
        report_to,
    }))
}
