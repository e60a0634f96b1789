// Verifies a latchkey license receipt offline, with Go's standard library only.
//
//	go run verify_receipt.go PUBLIC_KEY.pem RECEIPT HWID [NONCE]
//
// Exit status: 0 valid, 2 expired but inside its offline grace period, 1 invalid.
// VERIFY_NOW=<unix seconds> pretends the clock says that (for tests only).
// Copy VerifyReceipt into your application; main below only shows how to call it.
package main

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// ClockSkewSeconds is how far this machine's clock may lag the server's before a receipt counts
// as "from the future".
const ClockSkewSeconds = 300

// Claims are the claims of a latchkey receipt. Nonce is empty when none was sent.
type Claims struct {
	Iss   string `json:"iss"`
	App   *int64 `json:"app"`
	Key   int64  `json:"key"`
	Hwid  string `json:"hwid"`
	Iat   *int64 `json:"iat"`
	Exp   *int64 `json:"exp"`
	Grace int64  `json:"grace"`
	Nonce string `json:"nonce"`
}

// Options say what to check besides the signature. Empty fields are not checked.
type Options struct {
	Hwid  string // this machine's id, as sent to /api/activate and /api/check
	Nonce string // the nonce sent with the request that returned this receipt
	AppID int64  // your application's id on the server
	Now   time.Time
}

var base64url = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// ParsePublicKey reads the server's key (GET /api/license/public-key?format=pem), shipped inside the app.
func ParsePublicKey(pemBytes []byte) (ed25519.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, errors.New("not a PEM public key")
	}
	parsed, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	key, ok := parsed.(ed25519.PublicKey)
	if !ok {
		return nil, errors.New("the pinned public key is not an Ed25519 key")
	}
	return key, nil
}

// VerifyReceipt checks a receipt and returns "valid" or "grace" with its claims, or an error.
func VerifyReceipt(receipt string, key ed25519.PublicKey, opts Options) (string, *Claims, error) {
	parts := strings.Split(strings.TrimSpace(receipt), ".")
	if len(parts) != 3 || !base64url.MatchString(parts[0]) || !base64url.MatchString(parts[1]) || !base64url.MatchString(parts[2]) {
		return "", nil, errors.New("not a compact JWS (three base64url parts)")
	}
	headerJSON, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	claimsJSON, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	signature, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "", nil, errors.New("not a compact JWS (bad base64url)")
	}
	var header struct {
		Alg string `json:"alg"`
	}
	if err := json.Unmarshal(headerJSON, &header); err != nil {
		return "", nil, errors.New("the header is not JSON")
	}
	// Decide the algorithm yourself: never let the receipt choose it (no "none", no HMAC).
	if header.Alg != "EdDSA" {
		return "", nil, fmt.Errorf("unexpected algorithm %q", header.Alg)
	}
	if len(signature) != ed25519.SignatureSize || !ed25519.Verify(key, []byte(parts[0]+"."+parts[1]), signature) {
		return "", nil, errors.New("bad signature: altered, or signed by another server")
	}

	var claims Claims
	if err := json.Unmarshal(claimsJSON, &claims); err != nil {
		return "", nil, errors.New("the claims are not JSON")
	}
	if claims.Iss != "latchkey" || claims.Hwid == "" || claims.App == nil || claims.Iat == nil || claims.Exp == nil {
		return "", nil, errors.New("the claims are incomplete")
	}
	if opts.AppID != 0 && *claims.App != opts.AppID {
		return "", nil, fmt.Errorf("issued for application %d, not %d", *claims.App, opts.AppID)
	}
	if opts.Hwid != "" && claims.Hwid != opts.Hwid {
		return "", nil, errors.New("issued for another machine")
	}
	if opts.Nonce != "" && claims.Nonce != opts.Nonce {
		return "", nil, errors.New("the nonce does not match: a replayed receipt")
	}
	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	seconds := now.Unix()
	switch {
	case seconds < *claims.Iat-ClockSkewSeconds:
		return "", nil, errors.New("issued in the future: this machine's clock was set back")
	case seconds <= *claims.Exp:
		return "valid", &claims, nil
	case seconds <= *claims.Exp+claims.Grace:
		return "grace", &claims, nil
	}
	return "", nil, fmt.Errorf("expired at %s", time.Unix(*claims.Exp, 0).UTC().Format(time.RFC3339))
}

func main() {
	args := os.Args[1:]
	if len(args) < 3 || len(args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: verify_receipt PUBLIC_KEY.pem RECEIPT HWID [NONCE]")
		os.Exit(1)
	}
	pemBytes, err := os.ReadFile(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	key, err := ParsePublicKey(pemBytes)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	opts := Options{Hwid: args[2]}
	if len(args) == 4 {
		opts.Nonce = args[3]
	}
	if fake := os.Getenv("VERIFY_NOW"); fake != "" {
		seconds, err := strconv.ParseInt(fake, 10, 64)
		if err != nil {
			fmt.Fprintln(os.Stderr, "VERIFY_NOW must be unix seconds")
			os.Exit(1)
		}
		opts.Now = time.Unix(seconds, 0)
	}
	status, claims, err := VerifyReceipt(args[1], key, opts)
	if err != nil {
		fmt.Printf("invalid: %s\n", err)
		os.Exit(1)
	}
	fmt.Printf("%s: license %d of application %d on %s, expires %s\n", status, claims.Key, *claims.App, claims.Hwid,
		time.Unix(*claims.Exp, 0).UTC().Format(time.RFC3339))
	if status != "valid" {
		os.Exit(2)
	}
}
