// lanyard-interop-go: go-spiffe v2 (the reference SPIFFE client) against a
// real lanyard-agent, driven by tests/interop/go_spiffe.py.
//
//	lanyard-interop-go watch [-socket ADDR]
//	lanyard-interop-go poll  [-socket ADDR]
//	lanyard-interop-go jwt   [-socket ADDR] -aud A,B -wrong C
//	lanyard-interop-go serve [-socket ADDR] -port N (-id ID | -td TD)
//	lanyard-interop-go dial  [-socket ADDR] -port N (-id ID | -td TD) [-message M]
//
// Without -socket, go-spiffe's default: SPIFFE_ENDPOINT_SOCKET.
// watch: an X509Source, and beside it WatchX509Context, WatchX509Bundles and
// WatchJWTBundles on one more client; one JSON object per line on stdout for
// every update, every message and end of every Workload API stream (seen by a
// gRPC stream interceptor), and every line go-spiffe logs. Runs until stdin
// closes.
// poll: one-shot fetches every 20 ms until stdin closes, then the outcomes.
// jwt: FetchJWTSVID for two audiences, ValidateJWTSVID through the agent and
// jwtsvid.ParseAndValidate against FetchJWTBundles and a JWTSource; a third
// audience must be refused by both; FetchWITSVID's status. One JSON line.
// serve / dial: spiffetls mTLS with tlsconfig.AuthorizeID or
// AuthorizeMemberOf, speaking the line protocol of examples/ (client:
// "hello from ID\n", server: "hello PEER, this is ID\n").
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// ---- output: one JSON object per line, written whole under a lock ----

var outMu sync.Mutex

func emit(ev string, kv map[string]any) {
	if kv == nil {
		kv = map[string]any{}
	}
	kv["ev"] = ev
	kv["t"] = float64(time.Now().UnixNano()) / 1e9
	b, err := json.Marshal(kv)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"ev":"internal","err":%q}`, err.Error()))
	}
	outMu.Lock()
	os.Stdout.Write(append(b, '\n'))
	outMu.Unlock()
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "Error: "+format+"\n", args...)
	os.Exit(1)
}

// ---- go-spiffe's own log lines (the watch errors and backoff it decides) ----

type jsonLogger struct{ who string }

func (l jsonLogger) log(level, format string, args ...any) {
	emit("log", map[string]any{"who": l.who, "level": level, "msg": fmt.Sprintf(format, args...)})
}
func (l jsonLogger) Debugf(f string, a ...any) { l.log("debug", f, a...) }
func (l jsonLogger) Infof(f string, a ...any)  { l.log("info", f, a...) }
func (l jsonLogger) Warnf(f string, a ...any)  { l.log("warn", f, a...) }
func (l jsonLogger) Errorf(f string, a ...any) { l.log("error", f, a...) }

// ---- the stream interceptor: every message and end of every stream ----

// problems lists what a SPIFFE client would reject in one response.
func problems(m any) []string {
	var p []string
	switch r := m.(type) {
	case *workload.X509SVIDResponse:
		if len(r.Svids) == 0 {
			p = append(p, "empty svids")
		}
		for i, s := range r.Svids {
			if s.SpiffeId == "" {
				p = append(p, fmt.Sprintf("svids[%d]: no spiffe_id", i))
			}
			if len(s.Bundle) == 0 {
				p = append(p, fmt.Sprintf("svids[%d]: no bundle", i))
			}
			if len(s.X509Svid) == 0 || len(s.X509SvidKey) == 0 {
				p = append(p, fmt.Sprintf("svids[%d]: no certificate or key", i))
			}
		}
	case *workload.X509BundlesResponse:
		if len(r.Bundles) == 0 {
			p = append(p, "empty bundles")
		}
	case *workload.JWTBundlesResponse:
		if len(r.Bundles) == 0 {
			p = append(p, "empty bundles")
		}
	}
	return p
}

type watchedStream struct {
	grpc.ClientStream
	who, method string
	n           int
}

func (s *watchedStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err == nil {
		s.n++
		ev := map[string]any{"who": s.who, "method": s.method, "what": "msg", "n": s.n, "problems": problems(m)}
		if r, ok := m.(*workload.X509SVIDResponse); ok {
			// What the agent sent, before go-spiffe's own selection (hints).
			var ids []string
			for _, sv := range r.Svids {
				ids = append(ids, sv.SpiffeId+"#"+sv.Hint)
			}
			ev["svids"] = ids
		}
		emit("stream", ev)
		return nil
	}
	code := "OK"
	if !errors.Is(err, io.EOF) {
		code = status.Code(err).String()
	}
	emit("stream", map[string]any{"who": s.who, "method": s.method, "what": "end", "code": code,
		"msg": err.Error(), "n": s.n})
	return err
}

func interceptor(who string) grpc.StreamClientInterceptor {
	return func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string,
		streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			emit("stream", map[string]any{"who": who, "method": method, "what": "open-failed",
				"code": status.Code(err).String(), "msg": err.Error()})
			return nil, err
		}
		emit("stream", map[string]any{"who": who, "method": method, "what": "open"})
		return &watchedStream{ClientStream: cs, who: who, method: method}, nil
	}
}

// addrOption: -socket, or (when it is empty) go-spiffe's own default,
// SPIFFE_ENDPOINT_SOCKET.
func addrOption(addr string) []workloadapi.ClientOption {
	if addr == "" {
		return nil
	}
	return []workloadapi.ClientOption{workloadapi.WithAddr(addr)}
}

func clientOptions(addr, who string) []workloadapi.ClientOption {
	return append(addrOption(addr),
		workloadapi.WithLogger(jsonLogger{who}),
		workloadapi.WithDialOptions(grpc.WithStreamInterceptor(interceptor(who))),
	)
}

// ---- descriptions of what the library parsed ----

func fp(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return hex.EncodeToString(h[:8])
}

func authorities(b *x509bundle.Bundle) []string {
	var out []string
	for _, c := range b.X509Authorities() {
		out = append(out, fp(c))
	}
	sort.Strings(out)
	return out
}

func kids(b *jwtbundle.Bundle) []string {
	var out []string
	for k := range b.JWTAuthorities() {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func describeSVID(s *x509svid.SVID, bundles x509bundle.Source) map[string]any {
	leaf := s.Certificates[0]
	d := map[string]any{
		"id": s.ID.String(), "serial": leaf.SerialNumber.Text(16), "hint": s.Hint,
		"nb": leaf.NotBefore.Unix(), "na": leaf.NotAfter.Unix(), "top": fp(s.Certificates[len(s.Certificates)-1]),
		"chain": len(s.Certificates),
	}
	// x509svid.Verify: the chain up to an authority of the bundle of the SVID's
	// own trust domain, with go-spiffe's leaf rules.
	id, chains, err := x509svid.Verify(s.Certificates, bundles)
	switch {
	case err != nil:
		d["verify"] = err.Error()
	case id != s.ID:
		d["verify"] = "verified as " + id.String()
	default:
		d["verify"] = "ok"
		// The bundle authority the chain ends at.
		d["root"] = fp(chains[0][len(chains[0])-1])
	}
	return d
}

// ---- watch ----

type ctxWatcher struct{}

func (ctxWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	var svids []map[string]any
	for _, s := range c.SVIDs {
		svids = append(svids, describeSVID(s, c.Bundles))
	}
	bundles := map[string]any{}
	for _, b := range c.Bundles.Bundles() {
		bundles[b.TrustDomain().String()] = authorities(b)
	}
	emit("x509context", map[string]any{"svids": svids, "bundles": bundles})
}
func (ctxWatcher) OnX509ContextWatchError(err error) {
	emit("watch-error", map[string]any{"watch": "x509context", "code": status.Code(err).String(), "msg": err.Error()})
}

type bundleWatcher struct{}

func (bundleWatcher) OnX509BundlesUpdate(s *x509bundle.Set) {
	bundles := map[string]any{}
	for _, b := range s.Bundles() {
		bundles[b.TrustDomain().String()] = authorities(b)
	}
	emit("x509bundles", map[string]any{"bundles": bundles})
}
func (bundleWatcher) OnX509BundlesWatchError(err error) {
	emit("watch-error", map[string]any{"watch": "x509bundles", "code": status.Code(err).String(), "msg": err.Error()})
}
func (bundleWatcher) OnJWTBundlesUpdate(s *jwtbundle.Set) {
	bundles := map[string]any{}
	for _, b := range s.Bundles() {
		bundles[b.TrustDomain().String()] = kids(b)
	}
	emit("jwtbundles", map[string]any{"bundles": bundles})
}
func (bundleWatcher) OnJWTBundlesWatchError(err error) {
	emit("watch-error", map[string]any{"watch": "jwtbundles", "code": status.Code(err).String(), "msg": err.Error()})
}

func watch(addr string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(clientOptions(addr, "source")...))
	if err != nil {
		die("NewX509Source: %v", err)
	}
	defer src.Close()
	report := func() {
		s, err := src.GetX509SVID()
		if err != nil {
			emit("source", map[string]any{"err": err.Error()})
			return
		}
		d := describeSVID(s, src)
		if b, err := src.GetX509BundleForTrustDomain(s.ID.TrustDomain()); err == nil {
			d["bundle"] = authorities(b)
		}
		emit("source", d)
	}
	report()
	go func() {
		for {
			select {
			case <-src.Updated():
				report()
			case <-ctx.Done():
				return
			}
		}
	}()

	client, err := workloadapi.New(ctx, clientOptions(addr, "watcher")...)
	if err != nil {
		die("workloadapi.New: %v", err)
	}
	defer client.Close()
	var wg sync.WaitGroup
	for name, fn := range map[string]func() error{
		"x509context": func() error { return client.WatchX509Context(ctx, ctxWatcher{}) },
		"x509bundles": func() error { return client.WatchX509Bundles(ctx, bundleWatcher{}) },
		"jwtbundles":  func() error { return client.WatchJWTBundles(ctx, bundleWatcher{}) },
	} {
		wg.Add(1)
		go func(name string, fn func() error) {
			defer wg.Done()
			err := fn()
			// Only the context's end (Canceled) or InvalidArgument end a watch.
			emit("watch-ended", map[string]any{"watch": name, "code": status.Code(err).String(), "msg": fmt.Sprint(err)})
		}(name, fn)
	}
	emit("ready", nil)
	io.Copy(io.Discard, os.Stdin)
	emit("closing", nil)
	cancel()
	wg.Wait()
}

// ---- poll ----

// poll: one-shot FetchX509Context, FetchX509Bundles and FetchJWTBundles on
// a fresh client every 20 ms until stdin closes; then one JSON line with
// the count of each outcome (go-spiffe's parse included: "ok" means the
// library accepted the response).
func poll(addr string) {
	counts := map[string]int{}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(done)
	}()
	outcome := func(what string, err error) {
		k := what + " ok"
		if err != nil {
			if st, ok := status.FromError(err); ok {
				k = what + " " + st.Code().String()
			} else {
				k = what + " parse: " + err.Error()
			}
		}
		mu.Lock()
		counts[k]++
		mu.Unlock()
	}
	for {
		select {
		case <-done:
			emit("poll", map[string]any{"counts": counts})
			return
		case <-time.After(20 * time.Millisecond):
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		client, err := workloadapi.New(ctx, addrOption(addr)...)
		if err == nil {
			_, err = client.FetchX509Context(ctx)
			outcome("x509context", err)
			_, err = client.FetchX509Bundles(ctx)
			outcome("x509bundles", err)
			_, err = client.FetchJWTBundles(ctx)
			outcome("jwtbundles", err)
			client.Close()
		} else {
			outcome("new", err)
		}
		cancel()
	}
}

// ---- jwt ----

func jwtCheck(addr, audList, wrong string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	auds := strings.Split(audList, ",")
	if len(auds) < 2 {
		die("-aud needs two audiences")
	}
	res := map[string]any{}
	client, err := workloadapi.New(ctx, clientOptions(addr, "jwt")...)
	if err != nil {
		die("workloadapi.New: %v", err)
	}
	defer client.Close()

	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: auds[0], ExtraAudiences: auds[1:]})
	if err != nil {
		die("FetchJWTSVID: %v", err)
	}
	token := svid.Marshal()
	if hdr, err := base64.RawURLEncoding.DecodeString(strings.SplitN(token, ".", 2)[0]); err == nil {
		var h map[string]any
		if json.Unmarshal(hdr, &h) == nil {
			res["alg"], res["typ"], res["kid"] = h["alg"], h["typ"], h["kid"]
		}
	}
	res["id"] = svid.ID.String()
	res["aud"] = svid.Audience
	res["exp"] = svid.Expiry.Unix()

	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		die("FetchJWTBundles: %v", err)
	}
	jwtSrc, err := workloadapi.NewJWTSource(ctx, workloadapi.WithClientOptions(clientOptions(addr, "jwtsource")...))
	if err != nil {
		die("NewJWTSource: %v", err)
	}
	defer jwtSrc.Close()
	fromSrc, err := jwtSrc.FetchJWTSVID(ctx, jwtsvid.Params{Audience: auds[1]})
	if err != nil {
		die("JWTSource.FetchJWTSVID: %v", err)
	}
	res["source_id"] = fromSrc.ID.String()

	result := func(s *jwtsvid.SVID, err error) string {
		if err != nil {
			return "refused: " + err.Error()
		}
		return "ok " + s.ID.String()
	}
	for _, a := range append(append([]string{}, auds...), wrong) {
		res["agent:"+a] = result(client.ValidateJWTSVID(ctx, token, a))
		res["local:"+a] = result(jwtsvid.ParseAndValidate(token, bundles, []string{a}))
		res["source:"+a] = result(jwtsvid.ParseAndValidate(token, jwtSrc, []string{a}))
	}
	res["source_token:"+auds[1]] = result(jwtsvid.ParseAndValidate(fromSrc.Marshal(), jwtSrc, []string{auds[1]}))
	res["source_token:"+auds[0]] = result(jwtsvid.ParseAndValidate(fromSrc.Marshal(), jwtSrc, []string{auds[0]}))
	jb := map[string]any{}
	for _, b := range bundles.Bundles() {
		jb[b.TrustDomain().String()] = kids(b)
	}
	res["bundles"] = jb

	// A JWT-SVID for a named identity: the caller's own, and one it does not have.
	if s, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: auds[0], Subject: svid.ID}); err != nil {
		res["subject_own"] = "refused: " + err.Error()
	} else {
		res["subject_own"] = "ok " + s.ID.String()
	}
	other := spiffeid.RequireFromPath(svid.ID.TrustDomain(), "/not/mine")
	_, err = client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: auds[0], Subject: other})
	res["subject_other"] = status.Code(err).String()

	// The newer Workload API (WIT-SVIDs): a server without it answers UNIMPLEMENTED.
	_, err = client.FetchWITSVID(ctx, "")
	res["wit"] = status.Code(err).String()
	emit("jwt", res)
}

// ---- mTLS ----

func authorizer(id, td string) tlsconfig.Authorizer {
	switch {
	case id != "" && td == "":
		return tlsconfig.AuthorizeID(spiffeid.RequireFromString(id))
	case td != "" && id == "":
		return tlsconfig.AuthorizeMemberOf(spiffeid.RequireTrustDomainFromString(td))
	}
	fmt.Fprintln(os.Stderr, "Error: one of -id or -td is needed")
	os.Exit(2)
	return nil
}

func selfID(src *workloadapi.X509Source) string {
	s, err := src.GetX509SVID()
	if err != nil {
		return "?"
	}
	return s.ID.String()
}

func serve(addr string, port int, id, td string) {
	ctx := context.Background()
	auth := authorizer(id, td)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addrOption(addr)...))
	if err != nil {
		die("NewX509Source: %v", err)
	}
	defer src.Close()
	ln, err := spiffetls.ListenWithMode(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
		spiffetls.MTLSServerWithSource(auth, src))
	if err != nil {
		die("listen: %v", err)
	}
	fmt.Printf("listening on 127.0.0.1:%d as %s\n", port, selfID(src))
	for {
		conn, err := ln.Accept()
		if err != nil {
			die("accept: %v", err)
		}
		go func(c net.Conn) {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil {
				fmt.Printf("refused: %v\n", err)
				return
			}
			peer, err := spiffetls.PeerIDFromConn(c)
			if err != nil {
				fmt.Printf("refused: %v\n", err)
				return
			}
			fmt.Printf("accepted %s: %s", peer, line)
			fmt.Fprintf(c, "hello %s, this is %s\n", peer, selfID(src))
		}(conn)
	}
}

func dial(addr string, port int, id, td, message string) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	auth := authorizer(id, td)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addrOption(addr)...))
	if err != nil {
		die("NewX509Source: %v", err)
	}
	defer src.Close()
	conn, err := spiffetls.DialWithMode(ctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
		spiffetls.MTLSClientWithSource(auth, src))
	if err != nil {
		die("dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	peer, err := spiffetls.PeerIDFromConn(conn)
	if err != nil {
		die("peer: %v", err)
	}
	self := selfID(src)
	fmt.Printf("connected to %s as %s\n", peer, self)
	if _, err := fmt.Fprintf(conn, "%s from %s\n", message, self); err != nil {
		die("write: %v", err)
	}
	answer, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		die("read: %v", err)
	}
	fmt.Printf("answer: %s", answer)
}

// ---- federation (tests/interop/go_federation.py) ----

// dialLoop: one X509Source, then an mTLS connection to 127.0.0.1:port
// every interval (a line sent, the answer read) until stdin closes; each
// failure is one "dial-failed" line, the end one "dialloop" line with the
// counts. The peer's trust domain is another one: its authorities come
// from the federated bundles the agent serves.
func dialLoop(addr string, port int, id, td string, interval time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	auth := authorizer(id, td)
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(addrOption(addr)...))
	if err != nil {
		die("NewX509Source: %v", err)
	}
	defer src.Close()
	stop := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stop)
	}()
	ok, fail := 0, 0
	emit("dialloop-ready", map[string]any{"self": selfID(src)})
	for {
		select {
		case <-stop:
			emit("dialloop", map[string]any{"ok": ok, "fail": fail})
			return
		case <-time.After(interval):
		}
		err := func() error {
			dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
			defer dcancel()
			conn, err := spiffetls.DialWithMode(dctx, "tcp", fmt.Sprintf("127.0.0.1:%d", port),
				spiffetls.MTLSClientWithSource(auth, src))
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			if _, err := fmt.Fprintf(conn, "ping from %s\n", selfID(src)); err != nil {
				return err
			}
			if _, err := bufio.NewReader(conn).ReadString('\n'); err != nil {
				return err
			}
			return nil
		}()
		if err != nil {
			fail++
			emit("dial-failed", map[string]any{"err": err.Error()})
		} else {
			ok++
		}
	}
}

// jwtMint: a JWT-SVID for one audience from the caller's agent.
func jwtMint(addr, aud string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, clientOptions(addr, "jwtmint")...)
	if err != nil {
		die("workloadapi.New: %v", err)
	}
	defer client.Close()
	svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: aud})
	if err != nil {
		die("FetchJWTSVID: %v", err)
	}
	emit("jwtmint", map[string]any{"id": svid.ID.String(), "token": svid.Marshal()})
}

// jwtVerify: a token (from another trust domain) validated through the
// caller's agent (ValidateJWTSVID) and locally with the JWT bundles the
// agent gives the caller (FetchJWTBundles, jwtsvid.ParseAndValidate).
func jwtVerify(addr, token, aud string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := workloadapi.New(ctx, clientOptions(addr, "jwtverify")...)
	if err != nil {
		die("workloadapi.New: %v", err)
	}
	defer client.Close()
	res := map[string]any{}
	if s, err := client.ValidateJWTSVID(ctx, token, aud); err != nil {
		res["agent"] = "refused: " + err.Error()
	} else {
		res["agent"] = "ok " + s.ID.String()
	}
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		res["local"] = "no bundles: " + err.Error()
	} else {
		if s, err := jwtsvid.ParseAndValidate(token, bundles, []string{aud}); err != nil {
			res["local"] = "refused: " + err.Error()
		} else {
			res["local"] = "ok " + s.ID.String()
		}
		jb := map[string]any{}
		for _, b := range bundles.Bundles() {
			jb[b.TrustDomain().String()] = kids(b)
		}
		res["bundles"] = jb
	}
	if xb, err := client.FetchX509Bundles(ctx); err != nil {
		res["x509bundles"] = "error: " + status.Code(err).String()
	} else {
		tds := []string{}
		for _, b := range xb.Bundles() {
			tds = append(tds, b.TrustDomain().String())
		}
		sort.Strings(tds)
		res["x509bundles"] = tds
	}
	emit("jwtverify", res)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "Error: usage: lanyard-interop-go watch|poll|jwt|serve|dial|dialloop|jwtmint|jwtverify -socket ADDR ...")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	socket := fs.String("socket", "", "the Workload API address (unix:///path); default SPIFFE_ENDPOINT_SOCKET")
	aud := fs.String("aud", "", "jwt: two audiences, comma-separated")
	wrong := fs.String("wrong", "", "jwt: an audience the token was not made for")
	port := fs.Int("port", 0, "serve/dial: TCP port on 127.0.0.1")
	id := fs.String("id", "", "serve/dial: the peer's SPIFFE ID (tlsconfig.AuthorizeID)")
	td := fs.String("td", "", "serve/dial: the peer's trust domain (tlsconfig.AuthorizeMemberOf)")
	message := fs.String("message", "hello", "dial: the line to send")
	interval := fs.Duration("interval", 200*time.Millisecond, "dialloop: time between connections")
	token := fs.String("token", "", "jwtverify: the JWT-SVID to validate")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "watch":
		watch(*socket)
	case "poll":
		poll(*socket)
	case "jwt":
		jwtCheck(*socket, *aud, *wrong)
	case "serve":
		serve(*socket, *port, *id, *td)
	case "dial":
		dial(*socket, *port, *id, *td, *message)
	case "dialloop":
		dialLoop(*socket, *port, *id, *td, *interval)
	case "jwtmint":
		jwtMint(*socket, *aud)
	case "jwtverify":
		jwtVerify(*socket, *token, *aud)
	default:
		fmt.Fprintf(os.Stderr, "Error: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
}
