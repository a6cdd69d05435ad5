//! Answers for an ExternalName Service: the asked name is an alias (CNAME) of the Service's
//! `externalName`, and, as cluster DNS does, the answer carries the alias and the records of
//! the name it points to — a stub resolver (glibc's, Go's) does not chase a bare CNAME itself.
//! The target is looked up like any query: in the table (an ExternalName that names another
//! Service), or relayed to the machine's previous resolvers.

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::rdata::CNAME;
use hickory_proto::rr::{Name, RData, Record};

use super::{decide, forward::Forwarder, Decision};
use crate::names::{Lookup, Names};

/// Aliases followed for one query at most (an ExternalName naming another, and so on); a
/// longer chain, or a loop, gets SERVFAIL.
pub const MAX_ALIASES: usize = 8;

/// How the previous resolvers are asked: as the client asked (a client over TCP has no size
/// limit to fit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Udp,
    Tcp,
}

/// The answer to `query`, whose name is an alias of `target`: the CNAME records from the asked
/// name to the last name, then what the last name's lookup answered (its response code too:
/// NXDOMAIN if it does not exist). None if the query cannot be parsed.
pub async fn chase(
    query: &[u8],
    target: String,
    names: &Names,
    forwarder: &Forwarder,
    ttl: u32,
    via: Via,
) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let [question] = msg.queries.as_slice() else {
        return None;
    };
    let mut chain = Vec::new();
    let mut from = question.name().clone();
    let mut target = target;
    for _ in 0..MAX_ALIASES {
        let Ok(to) = Name::from_ascii(format!("{target}.")) else {
            break;
        };
        chain.push(Record::from_rdata(
            from,
            ttl,
            RData::CNAME(CNAME(to.clone())),
        ));
        let asked = with_name(&msg, &to)?;
        // The target is absolute: only its `*.svc.DOMAIN` forms are the table's.
        let decided = match names.lookup_target(&target) {
            Lookup::NotOurs => Decision::Forward,
            _ => decide(&asked, names, ttl),
        };
        let last = match decided {
            Decision::Reply(bytes) => Some(bytes),
            Decision::Alias(next) => {
                from = to;
                target = next;
                continue;
            }
            Decision::Forward => match via {
                Via::Udp => forwarder.udp(&asked).await,
                Via::Tcp => forwarder.tcp(&asked).await,
            },
            Decision::Drop => None,
        };
        return answer(&msg, chain, last.as_deref());
    }
    // A loop, or too long a chain.
    answer(&msg, Vec::new(), None)
}

/// `msg` asking for `name` instead (same id, type, flags and EDNS).
fn with_name(msg: &Message, name: &Name) -> Option<Vec<u8>> {
    let mut asked = msg.clone();
    let mut question = asked.queries.first()?.clone();
    question.set_name(name.clone());
    asked.queries = vec![question];
    asked.to_vec().ok()
}

/// The reply to `msg`: `chain`, then the records of `last` (the last name's answer), with its
/// response code; SERVFAIL without it.
fn answer(msg: &Message, chain: Vec<Record>, last: Option<&[u8]>) -> Option<Vec<u8>> {
    let last = last.and_then(|b| Message::from_vec(b).ok());
    let meta = msg.metadata;
    let code = last
        .as_ref()
        .map_or(ResponseCode::ServFail, |l| l.metadata.response_code);
    let mut out = Message::error_msg(meta.id, meta.op_code, code);
    out.metadata.recursion_desired = meta.recursion_desired;
    out.metadata.recursion_available = true;
    out.add_queries(msg.queries.clone());
    if let Some(last) = last {
        // A relayed answer cut short over UDP: the client asks again over TCP.
        out.metadata.truncation = last.metadata.truncation;
        out.add_answers(chain);
        out.add_answers(last.answers);
        // A negative answer's SOA, so stub resolvers can cache it.
        out.add_authorities(last.authorities);
    }
    if msg.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(super::EDNS_PAYLOAD);
        out.set_edns(edns);
    }
    out.to_vec().ok()
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::{MessageType, OpCode, Query};
    use hickory_proto::rr::RecordType;

    use super::*;

    /// The target's relayed answer was cut short (TC): the client is told so, to ask over TCP,
    /// instead of taking a part for the whole.
    #[test]
    fn a_truncated_answer_for_the_target_stays_truncated() {
        let mut msg = Message::new(5, MessageType::Query, OpCode::Query);
        msg.add_query(Query::query(
            Name::from_ascii("payments.shop.").unwrap(),
            RecordType::A,
        ));
        let mut last = Message::response(5, OpCode::Query);
        last.metadata.truncation = true;
        for (truncated, last) in [
            (true, last.clone()),
            (false, Message::response(5, OpCode::Query)),
        ] {
            let out = answer(&msg, Vec::new(), Some(&last.to_vec().unwrap())).unwrap();
            let out = Message::from_vec(&out).unwrap();
            assert_eq!(out.metadata.truncation, truncated);
            assert_eq!(out.metadata.response_code, ResponseCode::NoError);
        }
        let out = Message::from_vec(&answer(&msg, Vec::new(), None).unwrap()).unwrap();
        assert_eq!(out.metadata.response_code, ResponseCode::ServFail);
    }
}
