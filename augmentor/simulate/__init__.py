"""Virtual patients: anatomy (the phantom domain), lesions, CT acquisition and the cohorts built from them."""
