// Package auth is Ringer's identity layer for secure deployments: signed,
// expiring user tokens that an application issues to its users, and a NATS
// auth callout responder (ADR-26) that turns a valid token into a NATS user
// who may publish only its own commands and subscribe only to its own
// subjects and reply inbox.
//
// # Token format (version 1)
//
// A token is three dot-separated ASCII fields, v1.<payload>.<signature>:
//
//   - "v1" is the literal version tag.
//   - <payload> is the unpadded base64url encoding (RFC 4648 §5, alphabet
//     A-Z a-z 0-9 '-' '_', no '=') of a UTF-8 JSON object with the members
//     "sub" (string, required: the Ringer user id, 1..64 bytes of
//     [A-Za-z0-9_-]), "exp" (integer, required: expiry, Unix seconds) and
//     "iat" (integer, optional: issue time, Unix seconds, informational).
//     Other members are ignored. Members may appear in any order; the
//     signature covers the encoded bytes, so no canonical JSON is needed.
//   - <signature> is the unpadded base64url encoding of the 32-byte
//     HMAC-SHA256, keyed with the shared secret, of the ASCII bytes
//     "v1." + <payload> (everything before the second dot).
//
// A token is valid at time now if it is at most MaxTokenLen bytes, has
// exactly three fields, the first is "v1", the signature field decodes to 32
// bytes equal (in constant time) to the recomputed HMAC, the payload decodes
// to a JSON object whose "sub" is a valid id and whose "exp" is an integer,
// and now < exp. The checks are made in that order: nothing in the payload is
// parsed before the signature is verified. The secret is an opaque byte
// string of at least MinSecretLen bytes; ReadSecretFile reads it from a file
// (surrounding whitespace trimmed).
//
// Example (secret "0123456789abcdef0123456789abcdef", sub "alice",
// iat 1700000000, exp 1700003600):
//
//	payload JSON  {"sub":"alice","iat":1700000000,"exp":1700003600}
//	token         v1.eyJzdWIiOiJhbGljZSIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAzNjAwfQ.CYiJ_zObHYbOfjSbUDWiWSXTa51naDLmAtLvCLIGxiE
//
// (TestTokenVector pins it.) The same in a shell:
//
//	p=$(printf '%s' '{"sub":"alice","iat":1700000000,"exp":1700003600}' | basenc --base64url | tr -d '=\n')
//	s=$(printf 'v1.%s' "$p" | openssl dgst -sha256 -hmac "$SECRET" -binary | basenc --base64url | tr -d '=\n')
//	echo "v1.$p.$s"
//
// # Auth callout
//
// Responder answers the server's authorization requests on
// $SYS.REQ.USER.AUTH. The client presents its token as the CONNECT token
// (nats.Token) or as the password with any user name (nats.UserInfo). A valid
// token yields a user JWT, signed by the configured issuer account key,
// placed in the users account, named after the Ringer user (so the server's
// Nats-Request-Info header carries it), expiring when the token expires, with
// exactly these permissions:
//
//	publish   allow ringer.v1.cmd.<user>.*
//	subscribe allow ringer.v1.user.<user>.>  _INBOX_<user>.>
//
// Anything else gets an authorization response carrying an error, and the
// server refuses the connection. docs/security.md has the threat model and a
// complete server configuration.
package auth
