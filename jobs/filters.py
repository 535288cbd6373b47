"""Query parameters of the list endpoints, refused with 400 when they are not what we document.

DRF and django-filter read the last of a repeated parameter and drop what they cannot use; a
client that sends `status=pending&status=bogus` or `ordering=nmae` would get a list filtered or
ordered in a way it did not ask for, and never learn why.
"""

import django_filters
from django import forms
from rest_framework import filters
from rest_framework.exceptions import ErrorDetail, ValidationError

from jobs import handlers
from jobs.models import Job, JobResult

REPEATED = "Give this parameter once."
BLANK = "Give a value, or leave the parameter out."


def single_query_value(query_params, name: str) -> str | None:
    """Return the one value of a query parameter, or None; refuse it if it is repeated."""
    values = query_params.getlist(name)
    if len(values) > 1:
        raise ValidationError({name: [ErrorDetail(REPEATED, code="repeated")]})
    return values[0] if values else None


class OneValueFilterSet(django_filters.FilterSet):
    """A FilterSet whose every filter takes one value, which is not empty.

    django-filter would read the last of repeated values, and take an empty one as no filter.
    """

    def is_valid(self) -> bool:
        valid = super().is_valid()
        for name in self.filters:
            values = self.data.getlist(name)
            if len(values) > 1:
                self.form.add_error(name, forms.ValidationError(REPEATED, code="repeated"))
            elif values == [""]:
                self.form.add_error(name, forms.ValidationError(BLANK, code="blank"))
            else:
                continue
            valid = False
        return valid


class JobFilter(OneValueFilterSet):
    status = django_filters.ChoiceFilter(choices=Job.Status.choices)
    # Listed, not a callable, so that the schema shows them; like JobCreateSerializer's, they
    # are read on import, after the app has registered every job type.
    job_type = django_filters.ChoiceFilter(choices=[(name, name) for name in handlers.names()])
    # Through the schedule's runs (schedules.models.ScheduleRun); the view's owner filter
    # still applies, so another user's schedule lists nothing.
    schedule = django_filters.UUIDFilter(
        field_name="schedule_run__schedule_id", help_text="Only the jobs this schedule made."
    )

    class Meta:
        model = Job
        fields = ["status", "job_type", "schedule"]


class JobResultFilter(OneValueFilterSet):
    job = django_filters.UUIDFilter(field_name="job_id", help_text="Only the result of this job.")

    class Meta:
        model = JobResult
        fields = ["job"]


class OrderingFilter(filters.OrderingFilter):
    """DRF's ordering, limited to the view's `ordering_fields`, each at most once."""

    def get_ordering(self, request, queryset, view) -> list[str] | None:
        value = single_query_value(request.query_params, self.ordering_param)
        if value is None:
            return self.get_default_ordering(view)
        fields = view.ordering_fields
        terms = value.split(",")
        if len(terms) > len(fields) or any(term.removeprefix("-") not in fields for term in terms):
            message = (
                f"Order by one or more of {', '.join(fields)}, separated by commas; put `-` "
                "before a field for descending order."
            )
            raise ValidationError({self.ordering_param: [ErrorDetail(message, code="invalid")]})
        return terms

    def get_schema_operation_parameters(self, view) -> list[dict]:
        [parameter] = super().get_schema_operation_parameters(view)
        term = f"-?({'|'.join(view.ordering_fields)})"
        parameter["schema"]["pattern"] = f"^{term}(,{term}){{0,{len(view.ordering_fields) - 1}}}$"
        parameter["description"] = (
            f"Comma-separated fields to order by, `-` first for descending: "
            f"{', '.join(view.ordering_fields)}."
        )
        return [parameter]
