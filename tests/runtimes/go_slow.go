// An HTTP server (net/http) whose handler sleeps HANDLER_MS: every connection gets its own
// goroutine as soon as it is accepted, so the wait is in the handler, not in the queue.
// Usage: go_slow PORT HANDLER_MS
package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	port := os.Args[1]
	handlerMs, err := strconv.Atoi(os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bad HANDLER_MS:", err)
		os.Exit(2)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(handlerMs) * time.Millisecond)
		w.Write([]byte("ok\n"))
	})
	if err := http.ListenAndServe("127.0.0.1:"+port, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
