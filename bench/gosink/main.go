// A bare mTLS WebSocket sink on Go's crypto/tls and gorilla/websocket: the reference
// server's transport with nothing behind it. It answers every binary message with the
// same 92-byte reply (the size of an envelope ack) and does nothing else.
//
// Built from Debian's golang-go and golang-github-gorilla-websocket-dev, with no module
// download: GO111MODULE=off GOPATH=/usr/share/gocode go build (bench/targets.py does it).
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"log"
	"net/http"
	"os"

	"github.com/gorilla/websocket"
)

var reply = func() []byte {
	b := make([]byte, 92)
	for i := range b {
		b[i] = byte(i)
	}
	return b
}()

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "listen address")
	cert := flag.String("cert", "", "server certificate chain (PEM)")
	key := flag.String("key", "", "server key (PEM)")
	ca := flag.String("ca", "", "PEM bundle of trusted client CAs")
	flag.Parse()

	pem, err := os.ReadFile(*ca)
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		log.Fatalf("no certificate in %s", *ca)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatal(err)
	}
	upgrader := websocket.Upgrader{ReadBufferSize: 4096, WriteBufferSize: 4096}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer conn.Close()
		for {
			kind, _, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if kind == websocket.BinaryMessage {
				if err := conn.WriteMessage(websocket.BinaryMessage, reply); err != nil {
					return
				}
			}
		}
	})
	server := &http.Server{
		Addr:    *addr,
		Handler: handler,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{pair},
			ClientAuth:   tls.RequireAndVerifyClientCert,
			ClientCAs:    pool,
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
		},
	}
	log.Fatal(server.ListenAndServeTLS("", ""))
}
