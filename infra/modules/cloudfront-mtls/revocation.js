// Lanyard revocation at the edge: a CloudFront connection function (cloudfront-js-2.0).
// CloudFront has already verified the client certificate against the trust store; this
// function denies the connection when the leaf's serial is a key of the associated
// KeyValueStore, which `infra/scripts/sync-revocations.py` fills from `lanyard-ca revoked`.
// Keys are lowercase colon-hex DER serials ("00:8f:3a:..."); the serial CloudFront hands
// over is brought to that form first, with or without its leading 00, in any case.
import cf from 'cloudfront';

const kvs = cf.kvs();

// A store that cannot be read must not let a revoked device in.
const FAIL_OPEN = false;

// The distribution's viewer mTLS mode; the module writes it here. In "required" mode an
// event without certificate information is not what CloudFront documents: deny it rather
// than turn revocation off. Only "optional" mode lets a connection without one through.
const MTLS_MODE = 'required';

function deny(connection, why) {
  console.log(why);
  if (typeof connection.logCustomData === 'function') {
    connection.logCustomData(why);
  }
  return connection.deny();
}

function canonicalSerial(serial) {
  let hex = String(serial).toLowerCase().replace(/[^0-9a-f]/g, '');
  if (hex.length % 2 === 1) {
    hex = '0' + hex;
  }
  while (hex.length > 2 && hex.startsWith('00')) {
    hex = hex.slice(2);
  }
  if (parseInt(hex.slice(0, 2), 16) >= 0x80) {
    hex = '00' + hex;
  }
  const bytes = [];
  for (let i = 0; i < hex.length; i += 2) {
    bytes.push(hex.slice(i, i + 2));
  }
  return bytes.join(':');
}

function leafSerial(connection) {
  const info = connection.clientCertInfo;
  if (info && info.serialNumber) {
    return info.serialNumber;
  }
  const cert = connection.clientCertificate;
  if (cert && cert.certificates && cert.certificates.leaf) {
    return cert.certificates.leaf.serialNumber;
  }
  return undefined;
}

async function connectionHandler(connection) {
  const serial = leafSerial(connection);
  if (!serial) {
    // "optional" mode: no certificate, the origin decides (CloudFront-Viewer-Cert-Present).
    if (MTLS_MODE === 'optional') {
      return connection.allow();
    }
    return deny(connection, 'denied: no client certificate information in the event (mode ' + MTLS_MODE + ')');
  }
  const key = canonicalSerial(serial);
  let revoked;
  try {
    revoked = await kvs.exists(key);
  } catch (e) {
    if (FAIL_OPEN) {
      console.log('revocation store unavailable, allowed: ' + e);
      return connection.allow();
    }
    return deny(connection, 'denied: revocation store unavailable: ' + e);
  }
  if (revoked) {
    return deny(connection, 'denied: revoked certificate ' + key);
  }
  return connection.allow();
}
