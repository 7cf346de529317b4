//! The byte level of the replication connection: the socket (plain, TLS or Unix) with its buffers,
//! backend frame reading, the CopyBoth sub-protocol codec (`w` XLogData, `k` keepalive, `r` standby
//! status update) and [`ReplicationStream`], which reads that sub-protocol in batches.
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
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use super::error::SourceError;
use crate::lsn::Lsn;

/// Microseconds between the Unix epoch and PostgreSQL's epoch, 2000-01-01 00:00:00 UTC.
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;
/// How much the read buffer grows by when it runs low; one `read` can fill this much.
const READ_CHUNK: usize = 256 * 1024;
/// Below this much free space the read buffer is grown before reading.
const MIN_SPARE: usize = 16 * 1024;
/// Tag of `CopyBothResponse`, which `postgres_protocol`'s parser does not know.
const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// One message of the CopyBoth stream, from the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicationMessage {
    /// WAL data: for logical replication, one pgoutput message.
    XLogData { wal_start: Lsn, wal_end: Lsn, server_time: i64, data: Bytes },
    /// The server's position; `reply_requested` asks for a status update now.
    Keepalive { wal_end: Lsn, server_time: i64, reply_requested: bool },
}

/// Decodes the payload of a CopyData message sent by a walsender.
pub fn parse_copy_data(payload: Bytes) -> Result<ReplicationMessage, SourceError> {
    let truncated = |what: &str| SourceError::Protocol(format!("truncated {what} message ({} bytes)", payload.len()));
    match payload.first() {
        Some(b'w') => {
            let mut header = payload.get(1..25).ok_or_else(|| truncated("xlogdata"))?;
            let wal_start = Lsn(header.get_u64());
            let wal_end = Lsn(header.get_u64());
            let server_time = header.get_i64();
            Ok(ReplicationMessage::XLogData { wal_start, wal_end, server_time, data: payload.slice(25..) })
        }
        Some(b'k') => {
            // Exactly 18 bytes today; trailing bytes a future server might add are ignored.
            let mut body = payload.get(1..18).ok_or_else(|| truncated("keepalive"))?;
            let wal_end = Lsn(body.get_u64());
            let server_time = body.get_i64();
            Ok(ReplicationMessage::Keepalive { wal_end, server_time, reply_requested: body.get_u8() != 0 })
        }
        Some(tag) => Err(SourceError::Protocol(format!("unknown replication message tag {:?}", *tag as char))),
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
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
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
        Transport { stream, rbuf: BytesMut::with_capacity(READ_CHUNK), wbuf: BytesMut::with_capacity(1024) }
    }

    /// Reads once into the buffer. Cancellation-safe. EOF is [`SourceError::Closed`].
    pub(crate) async fn fill(&mut self) -> Result<(), SourceError> {
        if self.rbuf.capacity() - self.rbuf.len() < MIN_SPARE {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.stream.read_buf(&mut self.rbuf).await? {
            0 => Err(SourceError::Closed),
            _ => Ok(()),
        }
    }

    /// The tag of the next message if it is complete in the buffer.
    fn complete_tag(&self) -> Option<u8> {
        let len = self.rbuf.get(1..5)?;
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        (self.rbuf.len() > len).then(|| self.rbuf[0])
    }

    /// The next complete message in the buffer, without reading.
    pub(crate) fn parse_buffered(&mut self) -> Result<Option<Backend>, SourceError> {
        if self.complete_tag() == Some(COPY_BOTH_RESPONSE_TAG) {
            let len = u32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]) as usize;
            self.rbuf.advance(len + 1);
            return Ok(Some(Backend::CopyBothResponse));
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
        while let Some(tag) = self.transport.complete_tag() {
            if tag != b'd' && out.len() > before {
                break; // hand out the data first; the next call deals with this message
            }
            match self.transport.parse_buffered()? {
                Some(Backend::Message(Message::CopyData(body))) => out.push(parse_copy_data(body.into_bytes())?),
                Some(Backend::Message(Message::CopyDone)) => return Err(SourceError::Closed),
                Some(Backend::Message(Message::ErrorResponse(body))) => {
                    return Err(SourceError::from_error_fields(body.fields()))
                }
                Some(Backend::Message(Message::NoticeResponse(body))) => log_notice(body.fields()),
                Some(Backend::Message(Message::ParameterStatus(_))) => {}
                Some(_) => return Err(SourceError::Protocol("unexpected message in the replication stream".into())),
                None => break,
            }
        }
        Ok(out.len() > before)
    }

    /// Sends a standby status update and flushes it. If cancelled, the rest of the frame is sent
    /// before the next one.
    pub async fn send_status(&mut self, write: Lsn, flush: Lsn, apply: Lsn, reply: bool) -> Result<(), SourceError> {
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
    if let SourceError::Server { severity, code, message, .. } = SourceError::from_error_fields(fields) {
        tracing::info!(%severity, %code, %message, "postgres notice");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                ReplicationMessage::Keepalive { wal_end: Lsn(0xABCD), server_time: -5, reply_requested: expected }
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
        assert!(err.to_string().contains("unknown replication message tag 'x'"), "{err}");
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
        assert_eq!(*standby_status_update(Lsn(1), Lsn(1), Lsn(1), 0, false).last().unwrap(), 0);
    }

    #[test]
    fn postgres_clock_counts_from_the_year_2000() {
        // 2024-01-01T00:00:00Z is 757_382_400 s after 2000-01-01.
        let now = now_pg_micros();
        assert!(now > 757_382_400_000_000, "{now}");
        assert!(now < 3_000_000_000_000_000, "{now}");
    }
}
