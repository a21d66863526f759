"""What only the synthetic benchmark can measure: object parts, prototype make-up."""
