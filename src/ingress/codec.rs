//! The protobuf codec of `votes.v1` (set in build.rs): tonic's prost codec,
//! except that a request that does not decode (garbage bytes, a field sent
//! with the wrong wire type, e.g. a number where `name` is a string) is
//! INVALID_ARGUMENT. tonic reports it as INTERNAL, as gRPC's status-code table
//! suggests; but the cause is the client's message, retrying cannot help, and
//! INTERNAL would count a client's bug against the server's error budget.
//! The status carries [`Malformed`] as its source, so the service that
//! answered it can count the request as refused ([`is_malformed`]).

use std::sync::Arc;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct VotesCodec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for VotesCodec<T, U> {
    fn default() -> Self {
        VotesCodec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for VotesCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = VotesDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        VotesDecoder {
            prost: self.prost.decoder(),
        }
    }
}

#[derive(Debug)]
pub struct VotesDecoder<U> {
    prost: ProstDecoder<U>,
}

impl<U: Message + Default> Decoder for VotesDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.prost.decode(buf).map_err(|e| {
            let mut status = Status::invalid_argument(format!("{Malformed}: {}", e.message()));
            status.set_source(Arc::new(Malformed));
            status
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}

/// Marks the status of a request this codec could not decode.
#[derive(Debug, thiserror::Error)]
#[error("malformed protobuf message")]
pub struct Malformed;

/// Whether `status` answers a request this codec could not decode.
pub fn is_malformed(status: &Status) -> bool {
    std::error::Error::source(status).is_some_and(|source| source.is::<Malformed>())
}
