"""Words the pages show from data (states, classes, roles, kinds): marked here so that the
catalogues carry them; the templates translate them with ``_(value)``."""

from __future__ import annotations


def N_(message: str) -> str:
    """Marks a message for extraction; translated where it is shown."""
    return message


WORDS = [
    # roles
    N_("agency"), N_("information_center"), N_("municipal_office"),
    # pages
    N_("Catalogue"), N_("Requests"), N_("Grants"), N_("Commitments"), N_("Cases"),
    N_("Objections"),
    N_("Notices"), N_("Proposals"), N_("Reports"), N_("Operations"),
    # classes of the catalogue
    N_("foundational"), N_("thematic"), N_("departmental"), N_("unconditional"),
    N_("on_application"), N_("not_shared"),
    # states
    N_("pending"), N_("granted"), N_("rejected"), N_("refused"), N_("approved"),
    N_("in_force"), N_("revoked"), N_("lapsed"), N_("expired"), N_("open"), N_("closed"),
    N_("resolved"), N_("answered"), N_("withdrawn"), N_("filed"),
    # resolutions of a case
    N_("corrected"), N_("confirmed"), N_("dismissed"),
    # kinds
    N_("objection"), N_("complaint"), N_("request_pending"), N_("request_granted"),
    N_("request_rejected"), N_("request_refused"), N_("grant_revoked"), N_("grant_amended"),
    N_("grant_lapsed"), N_("review_due"),
    # severities of a proposal's findings
    N_("error"), N_("warning"),
    # kinds of a registered document
    N_("security"), N_("confidentiality"), N_("not_yet_signed"),
    # grant groups
    N_("In force"), N_("Lapsing within 30 days"), N_("Revoked, lapsed or expired"),
]

#: what a refusal's rule means, for the clerk (the API's message follows it, as sent)
RULES = {
    "console.csrf": N_("The form did not carry this session's security token. Open the page "
                       "again and resend the form."),
    "access.not_yours": N_("This record belongs to other agencies: you may not read it."),
    "access.other_agency": N_("One agency never acts as another."),
    "access.center_only": N_("Only the information center may do this."),
    "access.oversight_only": N_("Only the information center and the municipal office may "
                                "read this."),
    "case.not_owner": N_("Only the source of record resolves a case."),
    "case.not_open": N_("The case is no longer open."),
    "case.not_found": N_("There is no such case."),
    "request.not_provider": N_("Only the provider decides a request."),
    "request.not_found": N_("There is no such request."),
    "grant.not_provider": N_("Only the provider or the information center revokes a grant."),
    "notice.not_yours": N_("Only the recipient acknowledges a notice."),
    "objection.not_answerer": N_("You may not answer this objection or complaint."),
    "objection.not_received": N_("An objection is filed on data your agency received."),
    "input.invalid": N_("A field of the form is missing or not valid."),
}
