//! The byte level of the replication connection: the socket (plain, TLS or Unix) with its buffers,
//! TLS negotiation and the `tls-server-end-point` channel-binding hash, backend frame reading, the
//! CopyBoth sub-protocol codec (`w` XLogData, `k` keepalive, `r` standby status update) and
//! [`ReplicationStream`], which reads that sub-protocol in batches.
//!
//! Invariants:
//! - The codec functions are pure and never panic on any input; bad input is a
//!   [`SourceError::Protocol`].
//! - All read state lives in one `BytesMut`: awaiting only ever happens in `read_buf`, which either
//!   appends bytes or does nothing, so a read cancelled by `tokio::select!` loses nothing.
//! - Outgoing bytes stay in the write buffer until the socket took them, so a cancelled send never
//!   leaves half a frame behind: the rest goes out, in order, before the next frame.
//! - Messages handed out are zero-copy slices of the read buffer (`Bytes`); a consumer that keeps
//!   a message for long keeps its 256 KiB read chunk alive and should copy what it keeps.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::error::SourceError;
use crate::lsn::Lsn;
use crate::pg::{PgTarget, TlsMode};

/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// How much the read buffer grows by when it runs low; one `read` can fill this much.
const READ_CHUNK: usize = 256 * 1024;
/// Below this much free space the read buffer is grown before reading.
const MIN_SPARE: usize = 16 * 1024;
/// Largest backend message accepted: PostgreSQL builds messages in buffers of at most 1 GiB.
const MAX_MESSAGE: usize = 1 << 30;
/// Tag of `CopyBothResponse`, which `postgres_protocol`'s parser does not know.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// One message of the CopyBoth stream, from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: for logical replication, one pgoutput message.
    XLogData {
        wal_start: Lsn,
        wal_end: Lsn,
        server_time: i64,
        data: Bytes,
    },
    /// The server's position; `reply_requested` asks for a status update now.
    Keepalive {
        wal_end: Lsn,
        server_time: i64,
        reply_requested: bool,
    },
}

/// Decodes the payload of a CopyData message sent by a walsender.
pub fn parse_copy_data(payload: Bytes) -> Result<ReplicationMessage, SourceError> {
    let truncated =
        |what: &str| SourceError::Protocol(format!("truncated {what} message ({} bytes)", payload.len()));
    match payload.first() {
        Some(b'w') => {
            let mut header = payload.get(1..25).ok_or_else(|| truncated("xlogdata"))?;
            let wal_start = Lsn(header.get_u64());
            let wal_end = Lsn(header.get_u64());
            let server_time = header.get_i64();
            Ok(ReplicationMessage::XLogData {
                wal_start,
                wal_end,
                server_time,
                data: payload.slice(25..),
            })
        }
        Some(b'k') => {
            // Exactly 18 bytes today; trailing bytes a future server might add are ignored.
            let mut body = payload.get(1..18).ok_or_else(|| truncated("keepalive"))?;
            let wal_end = Lsn(body.get_u64());
            let server_time = body.get_i64();
            Ok(ReplicationMessage::Keepalive {
                wal_end,
                server_time,
                reply_requested: body.get_u8() != 0,
            })
        }
        Some(tag) => Err(SourceError::Protocol(format!(
            "unknown replication message tag {:?}",
            *tag as char
        ))),
        None => Err(SourceError::Protocol("empty replication message".into())),
    }
}

/// The body of a standby status update (`r`), to be sent as CopyData. Positions are "last byte
/// plus one" of what was written, flushed and applied; `reply` asks the server to answer at once.
pub fn standby_status_update(write: Lsn, flush: Lsn, apply: Lsn, now_pg_micros: i64, reply: bool) -> Bytes {
    let mut body = BytesMut::with_capacity(34);
    body.put_u8(b'r');
    body.put_u64(write.0);
    body.put_u64(flush.0);
    body.put_u64(apply.0);
    body.put_i64(now_pg_micros);
    body.put_u8(u8::from(reply));
    body.freeze()
}

/// Microseconds since 2000-01-01 00:00:00 UTC, the clock of the replication protocol.
pub fn now_pg_micros() -> i64 {
    let unix = match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    };
    unix.saturating_sub(PG_EPOCH_OFFSET_MICROS)
}

/// The socket under the protocol.
pub(crate) enum PgStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Unix(UnixStream),
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Tls(s) => Pin::new(s).poll_read(cx, buf),
            PgStream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Tls(s) => Pin::new(s).poll_write(cx, buf),
            PgStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PgStream::Tls(s) => Pin::new(s).poll_flush(cx),
            PgStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Tls(s) => Pin::new(s).poll_shutdown(cx),
            PgStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Sends the SSLRequest and, if the server agrees, runs the TLS handshake. Returns the stream and
/// the `tls-server-end-point` channel-binding data when it can be computed.
pub(crate) async fn negotiate_tls(
    mut tcp: TcpStream,
    target: &PgTarget,
    config: Arc<rustls::ClientConfig>,
) -> Result<(PgStream, Option<Vec<u8>>), SourceError> {
    let mut request = bytes::BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    // Exactly one byte: anything the server sent after it would be unauthenticated plaintext.
    let answer = tcp.read_u8().await?;
    match answer {
        b'S' => {}
        b'N' if target.tls == TlsMode::Prefer => {
            tracing::debug!(url = %target.redacted_url(), "server declined tls; continuing without it");
            return Ok((PgStream::Plain(tcp), None));
        }
        b'N' => {
            return Err(SourceError::Tls(format!(
                "tls mode {:?} requires TLS but the server at {}:{} does not accept it (ssl = off?)",
                target.tls, target.host, target.port
            )))
        }
        other => {
            return Err(SourceError::Protocol(format!(
                "unexpected answer {other:#04x} to the TLS request"
            )))
        }
    }
    let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
        SourceError::Tls(format!(
            "host {:?} is not a valid TLS server name: {e}",
            target.host
        ))
    })?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| {
            if e.get_ref().is_some_and(|inner| inner.is::<rustls::Error>()) {
                SourceError::Tls(format!(
                    "handshake with {}:{} failed: {e}",
                    target.host, target.port
                ))
            } else {
                SourceError::Io(e)
            }
        })?;
    let end_point = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(|c| tls_server_end_point(c));
    Ok((PgStream::Tls(Box::new(tls)), end_point))
}

/// RFC 5929 `tls-server-end-point`: the certificate hashed with its signature's hash, SHA-256 for
/// MD5 and SHA-1. `None` when that hash is not SHA-256 or SHA-384 (SCRAM then runs unbound).
fn tls_server_end_point(cert_der: &[u8]) -> Option<Vec<u8>> {
    use rustls::crypto::ring::cipher_suite::{TLS13_AES_128_GCM_SHA256, TLS13_AES_256_GCM_SHA384};
    let suite = match signature_hash_bits(cert_der)? {
        256 => TLS13_AES_128_GCM_SHA256,
        384 => TLS13_AES_256_GCM_SHA384,
        _ => return None,
    };
    Some(
        suite
            .tls13()?
            .common
            .hash_provider
            .hash(cert_der)
            .as_ref()
            .to_vec(),
    )
}

/// The hash size of a certificate's outer `signatureAlgorithm`, from its DER encoding.
fn signature_hash_bits(cert_der: &[u8]) -> Option<u32> {
    const RSA_PKCS1: &[u8] = &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01]; // 1.2.840.113549.1.1
    const ECDSA_SHA1: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x01]; // 1.2.840.10045.4.1
    const ECDSA_SHA2: &[u8] = &[0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x04, 0x03]; // 1.2.840.10045.4.3
    let (0x30, certificate, _) = der_element(cert_der)? else {
        return None;
    };
    let (0x30, _tbs, rest) = der_element(certificate)? else {
        return None;
    };
    let (0x30, algorithm, _) = der_element(rest)? else {
        return None;
    };
    let (0x06, oid, _) = der_element(algorithm)? else {
        return None;
    };
    let (prefix, last) = oid.split_at(oid.len().checked_sub(1)?);
    match (prefix, last[0]) {
        (RSA_PKCS1, 4 | 5 | 11) | (ECDSA_SHA2, 2) => Some(256), // md5, sha1, sha256
        (RSA_PKCS1, 12) | (ECDSA_SHA2, 3) => Some(384),
        (RSA_PKCS1, 13) | (ECDSA_SHA2, 4) => Some(512),
        _ if oid == ECDSA_SHA1 => Some(256),
        _ => None,
    }
}

/// One DER element: (tag, content, rest). Definite lengths only, as DER requires.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7F);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// A backend message, including the one `postgres_protocol` does not parse.
pub(crate) enum Backend {
    Message(Message),
    CopyBothResponse,
}

/// The socket with its read and write buffers.
pub(crate) struct Transport {
    stream: PgStream,
    rbuf: BytesMut,
    pub(crate) wbuf: BytesMut,
}

impl Transport {
    pub(crate) fn new(stream: PgStream) -> Self {
        Transport {
            stream,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::with_capacity(1024),
        }
    }

    /// Reads once into the buffer. Cancellation-safe. EOF is [`SourceError::Closed`].
    pub(crate) async fn fill(&mut self) -> Result<(), SourceError> {
        // Room for the rest of a large message at once, so it is not regrown chunk by chunk.
        let missing = self
            .frame_len()?
            .map_or(0, |len| len.saturating_sub(self.rbuf.len()));
        let want = missing.max(MIN_SPARE);
        if self.rbuf.capacity() - self.rbuf.len() < want {
            // Up to READ_CHUNK in all, not READ_CHUNK more: once the previous batch's messages are
            // dropped the buffer is unique again and this reuses it in place. Asking for more than
            // it holds forced a fresh allocation (mmap, page faults) on every read.
            self.rbuf
                .reserve(want.max(READ_CHUNK.saturating_sub(self.rbuf.len())));
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(SourceError::Closed),
            _ => Ok(()),
        }
    }

    /// Total length (tag included) of the message at the front of the buffer, once its header is in.
    fn frame_len(&self) -> Result<Option<usize>, SourceError> {
        let Some(header) = self.rbuf.get(1..5) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if !(4..=MAX_MESSAGE).contains(&len) {
            return Err(SourceError::Protocol(format!(
                "invalid backend message length {len}"
            )));
        }
        Ok(Some(len + 1))
    }

    /// The tag of the next message if it is complete in the buffer.
    fn complete_tag(&self) -> Result<Option<u8>, SourceError> {
        Ok(self
            .frame_len()?
            .filter(|len| self.rbuf.len() >= *len)
            .map(|_| self.rbuf[0]))
    }

    /// The next complete message in the buffer, without reading.
    pub(crate) fn parse_buffered(&mut self) -> Result<Option<Backend>, SourceError> {
        if self.complete_tag()? == Some(COPY_BOTH_RESPONSE_TAG) {
            if let Some(len) = self.frame_len()? {
                self.rbuf.advance(len);
                return Ok(Some(Backend::CopyBothResponse));
            }
        }
        match Message::parse(&mut self.rbuf) {
            Ok(message) => Ok(message.map(Backend::Message)),
            Err(e) => Err(SourceError::Protocol(format!("malformed backend message: {e}"))),
        }
    }

    /// The next backend message, reading as needed.
    pub(crate) async fn read(&mut self) -> Result<Backend, SourceError> {
        loop {
            if let Some(message) = self.parse_buffered()? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    /// Writes out the write buffer and flushes. Cancellation leaves the unsent rest in the buffer.
    pub(crate) async fn send(&mut self) -> Result<(), SourceError> {
        while self.wbuf.has_remaining() {
            self.stream.write_buf(&mut self.wbuf).await?;
        }
        self.stream.flush().await?;
        Ok(())
    }

    pub(crate) async fn shutdown(&mut self) -> Result<(), SourceError> {
        Ok(self.stream.shutdown().await?)
    }
}

/// The CopyBoth phase of a replication connection, after `START_REPLICATION`.
pub struct ReplicationStream {
    transport: Transport,
}

impl ReplicationStream {
    pub(crate) fn new(transport: Transport) -> Self {
        ReplicationStream { transport }
    }

    /// Appends every complete message in the buffer to `out`, reading from the socket (once, or
    /// again while only a partial message has arrived) if none is buffered.
    ///
    /// Cancellation-safe: the only await is the socket read. CopyDone or EOF is
    /// [`SourceError::Closed`], an `ErrorResponse` is [`SourceError::Server`]; either is returned
    /// only after the messages that preceded it have been handed out by an earlier call.
    pub async fn next_batch(&mut self, out: &mut Vec<ReplicationMessage>) -> Result<(), SourceError> {
        loop {
            if self.drain_buffered(out)? {
                return Ok(());
            }
            self.transport.fill().await?;
        }
    }

    /// Parses buffered messages into `out`; true if it appended any.
    fn drain_buffered(&mut self, out: &mut Vec<ReplicationMessage>) -> Result<bool, SourceError> {
        let before = out.len();
        while let Some(tag) = self.transport.complete_tag()? {
            if tag != b'd' && out.len() > before {
                break; // hand out the data first; the next call deals with this message
            }
            match self.transport.parse_buffered()? {
                Some(Backend::Message(Message::CopyData(body))) => {
                    out.push(parse_copy_data(body.into_bytes())?)
                }
                // The server ends the stream with CopyDone, or, when a walsender shuts down with
                // PostgreSQL, with CommandComplete ("COPY 0") once everything sent is confirmed.
                Some(Backend::Message(Message::CopyDone | Message::CommandComplete(_))) => {
                    return Err(SourceError::Closed)
                }
                Some(Backend::Message(Message::ErrorResponse(body))) => {
                    return Err(SourceError::from_error_fields(body.fields()))
                }
                Some(Backend::Message(Message::NoticeResponse(body))) => log_notice(body.fields()),
                Some(Backend::Message(Message::ParameterStatus(_))) => {}
                Some(_) => {
                    return Err(SourceError::Protocol(
                        "unexpected message in the replication stream".into(),
                    ))
                }
                None => break,
            }
        }
        Ok(out.len() > before)
    }

    /// Sends a standby status update and flushes it. If cancelled, the rest of the frame is sent
    /// before the next one.
    pub async fn send_status(
        &mut self,
        write: Lsn,
        flush: Lsn,
        apply: Lsn,
        reply: bool,
    ) -> Result<(), SourceError> {
        let body = standby_status_update(write, flush, apply, now_pg_micros(), reply);
        let frame = frontend::CopyData::new(body).map_err(|e| SourceError::Protocol(e.to_string()))?;
        frame.write(&mut self.transport.wbuf);
        self.transport.send().await
    }

    /// Ends the stream cleanly: sends CopyDone, then drains until the server is ready for queries
    /// again, and terminates the session. Bound it with a timeout; errors are only informative.
    pub async fn finish(mut self) -> Result<(), SourceError> {
        frontend::copy_done(&mut self.transport.wbuf);
        self.transport.send().await?;
        let mut error = None;
        loop {
            match self.transport.read().await? {
                Backend::Message(Message::ReadyForQuery(_)) => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    error = Some(SourceError::from_error_fields(body.fields()))
                }
                _ => {}
            }
        }
        frontend::terminate(&mut self.transport.wbuf);
        self.transport.send().await?;
        let _ = self.transport.shutdown().await;
        error.map_or(Ok(()), Err)
    }
}

/// Logs a server notice by its SQLSTATE and message.
pub(crate) fn log_notice(fields: postgres_protocol::message::backend::ErrorFields<'_>) {
    if let SourceError::Server {
        severity,
        code,
        message,
        ..
    } = SourceError::from_error_fields(fields)
    {
        tracing::info!(%severity, %code, %message, "postgres notice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificate_signature_hash_picks_the_channel_binding_hash() {
        assert_eq!(
            signature_hash_bits(&self_signed(&rcgen::PKCS_ECDSA_P256_SHA256)),
            Some(256)
        );
        assert_eq!(
            signature_hash_bits(&self_signed(&rcgen::PKCS_ECDSA_P384_SHA384)),
            Some(384)
        );
        assert_eq!(signature_hash_bits(&self_signed(&rcgen::PKCS_ED25519)), None);
        assert_eq!(
            tls_server_end_point(&self_signed(&rcgen::PKCS_ECDSA_P256_SHA256)).map(|h| h.len()),
            Some(32)
        );
        assert_eq!(
            tls_server_end_point(&self_signed(&rcgen::PKCS_ECDSA_P384_SHA384)).map(|h| h.len()),
            Some(48)
        );
    }

    #[test]
    fn malformed_certificates_yield_no_channel_binding() {
        let good = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
        for len in 0..good.len() {
            // Truncations may still parse up to the algorithm; they must never panic.
            let _ = signature_hash_bits(&good[..len]);
        }
        assert_eq!(signature_hash_bits(&[0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]), None);
        assert_eq!(signature_hash_bits(b"not a certificate"), None);
    }

    fn xlogdata_bytes(data: &[u8]) -> Vec<u8> {
        let mut b = vec![b'w'];
        b.extend_from_slice(&0x0000_0001_0000_0010u64.to_be_bytes());
        b.extend_from_slice(&0x0000_0001_0000_0020u64.to_be_bytes());
        b.extend_from_slice(&777i64.to_be_bytes());
        b.extend_from_slice(data);
        b
    }

    #[test]
    fn xlogdata_is_parsed_with_its_positions_and_payload() {
        let msg = parse_copy_data(Bytes::from(xlogdata_bytes(b"B123"))).unwrap();
        assert_eq!(
            msg,
            ReplicationMessage::XLogData {
                wal_start: Lsn(0x1_0000_0010),
                wal_end: Lsn(0x1_0000_0020),
                server_time: 777,
                data: Bytes::from_static(b"B123"),
            }
        );
    }

    #[test]
    fn xlogdata_with_empty_payload_is_accepted() {
        let msg = parse_copy_data(Bytes::from(xlogdata_bytes(b""))).unwrap();
        assert!(matches!(msg, ReplicationMessage::XLogData { data, .. } if data.is_empty()));
    }

    #[test]
    fn keepalive_is_parsed_with_its_reply_flag() {
        let mut b = vec![b'k'];
        b.extend_from_slice(&0xABCDu64.to_be_bytes());
        b.extend_from_slice(&(-5i64).to_be_bytes());
        for (flag, expected) in [(0u8, false), (1, true)] {
            let mut bytes = b.clone();
            bytes.push(flag);
            let msg = parse_copy_data(Bytes::from(bytes)).unwrap();
            assert_eq!(
                msg,
                ReplicationMessage::Keepalive {
                    wal_end: Lsn(0xABCD),
                    server_time: -5,
                    reply_requested: expected
                }
            );
        }
    }

    #[test]
    fn every_truncation_of_a_message_is_a_protocol_error() {
        let mut keepalive = vec![b'k'];
        keepalive.extend_from_slice(&[0; 17]);
        for full in [xlogdata_bytes(b""), keepalive] {
            for len in 0..full.len() {
                let err = parse_copy_data(Bytes::copy_from_slice(&full[..len])).unwrap_err();
                assert!(matches!(err, SourceError::Protocol(_)), "length {len}: {err}");
            }
        }
    }

    #[test]
    fn unknown_tags_are_rejected() {
        let err = parse_copy_data(Bytes::from_static(b"x12345678901234567890123456")).unwrap_err();
        assert!(
            err.to_string().contains("unknown replication message tag 'x'"),
            "{err}"
        );
    }

    #[test]
    fn standby_status_update_has_the_exact_protocol_layout() {
        let body = standby_status_update(Lsn(0x0102), Lsn(0x0304), Lsn(0x0506), 0x0A0B, true);
        let mut expected = vec![b'r'];
        for v in [0x0102u64, 0x0304, 0x0506, 0x0A0B] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        expected.push(1);
        assert_eq!(&body[..], &expected[..]);
        assert_eq!(body.len(), 34);
        assert_eq!(
            *standby_status_update(Lsn(1), Lsn(1), Lsn(1), 0, false)
                .last()
                .unwrap(),
            0
        );
    }

    #[test]
    fn postgres_clock_counts_from_the_year_2000() {
        // 2024-01-01T00:00:00Z is 757_382_400 s after 2000-01-01.
        let now = now_pg_micros();
        assert!(now > 757_382_400_000_000, "{now}");
        assert!(now < 3_000_000_000_000_000, "{now}");
    }

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut f = vec![tag];
        f.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        f.extend_from_slice(body);
        f
    }

    fn keepalive_frame(wal_end: u64) -> Vec<u8> {
        let mut body = vec![b'k'];
        body.extend_from_slice(&wal_end.to_be_bytes());
        body.extend_from_slice(&0i64.to_be_bytes());
        body.push(0);
        frame(b'd', &body)
    }

    fn stream_pair() -> (ReplicationStream, tokio::net::UnixStream) {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        (
            ReplicationStream::new(Transport::new(PgStream::Unix(ours))),
            theirs,
        )
    }

    #[tokio::test]
    async fn next_batch_returns_every_complete_message_and_keeps_a_partial_one() {
        let (mut stream, mut server) = stream_pair();
        let mut bytes: Vec<u8> = (1..=3).flat_map(keepalive_frame).collect();
        let fourth = keepalive_frame(4);
        bytes.extend_from_slice(&fourth[..10]);
        server.write_all(&bytes).await.unwrap();
        let mut out = Vec::new();
        while out.len() < 3 {
            stream.next_batch(&mut out).await.unwrap();
        }
        assert_eq!(out.len(), 3);
        server.write_all(&fourth[10..]).await.unwrap();
        stream.next_batch(&mut out).await.unwrap();
        assert!(matches!(
            out[3],
            ReplicationMessage::Keepalive { wal_end: Lsn(4), .. }
        ));
    }

    #[tokio::test]
    async fn server_error_and_copy_done_come_after_the_data_before_them() {
        let (mut stream, mut server) = stream_pair();
        let mut bytes = keepalive_frame(1);
        bytes.extend(keepalive_frame(2));
        bytes.extend(frame(
            b'E',
            b"SERROR\0C57P01\0Mterminating connection due to administrator command\0\0",
        ));
        server.write_all(&bytes).await.unwrap();
        let mut out = Vec::new();
        while out.len() < 2 {
            stream.next_batch(&mut out).await.unwrap();
        }
        let err = stream.next_batch(&mut out).await.unwrap_err();
        assert_eq!(
            (err.code(), err.is_transient(), out.len()),
            (Some("57P01"), true, 2),
            "{err}"
        );

        let (mut stream, mut server) = stream_pair();
        server
            .write_all(&[keepalive_frame(1), frame(b'c', b"")].concat())
            .await
            .unwrap();
        let mut out = Vec::new();
        while out.is_empty() {
            stream.next_batch(&mut out).await.unwrap();
        }
        assert!(matches!(
            stream.next_batch(&mut out).await,
            Err(SourceError::Closed)
        ));

        let (mut stream, server) = stream_pair();
        drop(server);
        assert!(matches!(
            stream.next_batch(&mut out).await,
            Err(SourceError::Closed)
        ));
    }

    #[tokio::test]
    async fn send_status_writes_one_copy_data_frame() {
        let (mut stream, mut server) = stream_pair();
        stream.send_status(Lsn(3), Lsn(2), Lsn(1), true).await.unwrap();
        let mut got = vec![0u8; 39];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got[0], b'd');
        assert_eq!(u32::from_be_bytes(got[1..5].try_into().unwrap()), 38);
        assert_eq!(got[5], b'r');
        assert_eq!(&got[6..14], &3u64.to_be_bytes());
        assert_eq!(got[38], 1);
    }

    #[tokio::test]
    async fn many_small_messages_are_decoded_in_large_batches() {
        const N: usize = 200_000;
        let (mut stream, mut server) = stream_pair();
        let mut payload = vec![b'w'];
        payload.extend_from_slice(&[0; 24]);
        payload.extend_from_slice(b"I\0\0\0\x01N\0\x01t\0\0\0\x01x");
        let one = frame(b'd', &payload);
        let writer = tokio::spawn(async move {
            let all: Vec<u8> = std::iter::repeat(one).take(N).flatten().collect();
            server.write_all(&all).await.unwrap();
            server
        });
        let started = std::time::Instant::now();
        let (mut out, mut total, mut batches) = (Vec::new(), 0, 0);
        while total < N {
            stream.next_batch(&mut out).await.unwrap();
            total += out.len();
            batches += 1;
            out.clear();
        }
        let elapsed = started.elapsed();
        drop(writer.await.unwrap());
        assert_eq!(total, N);
        assert!(batches < N / 10, "{batches} batches for {N} messages");
        eprintln!(
            "{N} messages in {elapsed:?} ({:.0}/s), {batches} batches",
            N as f64 / elapsed.as_secs_f64()
        );
    }

    #[tokio::test]
    async fn a_message_larger_than_the_read_chunk_arrives_whole() {
        let (mut stream, mut server) = stream_pair();
        let data = vec![7u8; 3 * READ_CHUNK + 5];
        let mut payload = vec![b'w'];
        payload.extend_from_slice(&[0; 24]);
        payload.extend_from_slice(&data);
        let writer =
            tokio::spawn(async move { server.write_all(&frame(b'd', &payload)).await.map(|_| server) });
        let mut out = Vec::new();
        stream.next_batch(&mut out).await.unwrap();
        assert!(matches!(&out[..], [ReplicationMessage::XLogData { data: d, .. }] if d[..] == data[..]));
        drop(writer.await.unwrap().unwrap());
    }

    #[tokio::test]
    async fn an_absurd_message_length_is_a_protocol_error_not_an_allocation() {
        let (mut stream, mut server) = stream_pair();
        server
            .write_all(&[b'd', 0xFF, 0xFF, 0xFF, 0xF0, b'w'])
            .await
            .unwrap();
        let err = stream.next_batch(&mut Vec::new()).await.unwrap_err();
        assert!(matches!(err, SourceError::Protocol(_)), "{err}");
    }
}
