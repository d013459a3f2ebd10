// Package certexpiry exports when the serving certificates itmanager
// depends on expire, read at scrape time, so an alert fires before agents
// or the API server stop trusting them.
package certexpiry

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	expiryDesc = prometheus.NewDesc("itmanager_certificate_expiry_timestamp_seconds",
		"When a serving certificate itmanager uses expires (notAfter of the leaf), as a Unix time, by certificate (webhook, checkin, metrics).",
		[]string{"certificate"}, nil)
	errorDesc = prometheus.NewDesc("itmanager_certificate_read_errors",
		"1 when the last scrape could not read or parse a certificate (its expiry is then missing), by certificate.",
		[]string{"certificate"}, nil)
)

// Source returns a certificate's leaf.
type Source func() (*x509.Certificate, error)

// Collector reports the expiry of each named Source.
type Collector struct {
	Sources map[string]Source
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- expiryDesc
	ch <- errorDesc
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for name, src := range c.Sources {
		leaf, err := src()
		failed := 0.0
		if err != nil {
			failed = 1
		} else {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(leaf.NotAfter.Unix()), name)
		}
		ch <- prometheus.MustNewConstMetric(errorDesc, prometheus.GaugeValue, failed, name)
	}
}

// File is the first certificate of a PEM file (a mounted Secret's tls.crt).
func File(path string) Source {
	return func() (*x509.Certificate, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		return Leaf(data)
	}
}

// Leaf parses the first certificate of PEM data.
func Leaf(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no certificate in PEM data")
		}
		if block.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse certificate: %w", err)
			}
			return c, nil
		}
	}
}
