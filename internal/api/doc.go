// Package api holds the wire types of Keylime's REST API (v2.x): the {code, status, results} envelope, the
// supported API versions and the request and response bodies of the agent, registrar and verifier, with JSON
// field names exactly as upstream Keylime spells them. It depends on the standard library only, so every
// role and the tenant can share it without pulling in each other's code.
package api
